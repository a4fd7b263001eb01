"""The rclpy message classes `convert` builds when the transport runs through rclpy.

Imported only on that path: a robot without a ROS 2 installation uses `msgs` (raw Cyclone DDS).
"""

from __future__ import annotations

from trot.deploy.ros2.convert import MessageTypes


def rclpy_message_types() -> MessageTypes:
    """The ROS 2 Python message classes, from a sourced ROS 2 installation."""
    from builtin_interfaces.msg import Time
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from geometry_msgs.msg import Quaternion, Twist, Vector3
    from sensor_msgs.msg import Imu, JointState
    from std_msgs.msg import Bool, Float64MultiArray, Header, MultiArrayDimension, MultiArrayLayout

    return MessageTypes(
        Time=Time,
        Header=Header,
        Bool=Bool,
        MultiArrayDimension=MultiArrayDimension,
        MultiArrayLayout=MultiArrayLayout,
        Float64MultiArray=Float64MultiArray,
        Vector3=Vector3,
        Quaternion=Quaternion,
        Twist=Twist,
        Imu=Imu,
        JointState=JointState,
        KeyValue=KeyValue,
        DiagnosticStatus=DiagnosticStatus,
        DiagnosticArray=DiagnosticArray,
    )
