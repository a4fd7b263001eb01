"""The rclpy message classes `convert` builds when the transport runs through rclpy.

Imported only on that path: a robot without a ROS 2 installation uses `msgs` (raw Cyclone DDS).
"""

from __future__ import annotations

import importlib

from trot.deploy.ros2.convert import MessageTypes


def rclpy_message_types() -> MessageTypes:
    """The ROS 2 Python message classes, from a sourced ROS 2 installation."""
    return MessageTypes.collect(lambda package, name: getattr(importlib.import_module(f"{package}.msg"), name))
