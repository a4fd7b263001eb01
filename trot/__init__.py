"""trot: train a small quadruped in simulation and run it on the robot."""

__version__ = "0.1.0"
