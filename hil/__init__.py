"""trot.hil: the robot's stand-ins, above both sim/ and deploy/ because they exercise both.

The PyBullet model, the gate (sim2sim), the emulator that speaks the serial protocol behind a pty and
the ROS 2 topics, and the deploy-loop bench. Nothing in sim/ or deploy/ imports from here.
"""
