"""ROS 2 transport: message layer shared by the rclpy path and the raw Cyclone DDS path.

- `topics`: topic names, QoS profiles and frame ids (`Ros2Topics`), no middleware import.
- `convert`: ROS 2 messages <-> numpy arrays, plain functions over ROS field names.
- `msgs`: the ROS 2 wire types as Cyclone DDS IDL structs (imports `cyclonedds`).
- `dds`: participant, readers, writers and the loopback configuration (imports `cyclonedds`).
- `rclpy_msgs`: the rclpy message classes, for the rclpy path (imports ROS 2 packages).
- `transport`: the deploy loop's `Transport` over these topics (raw DDS, or rclpy where it imports).
- `args`: the command-line flags of `--transport ros2` shared by `trot deploy` and `trot emulate`.

`ROS2.md` next to the parent package documents the topics, QoS, gains and interop.
Importing this package imports neither cyclonedds nor rclpy.
"""
