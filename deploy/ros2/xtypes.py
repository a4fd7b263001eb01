"""Type information (DDS-XTypes) between trot's raw Cyclone DDS path and other vendors' ROS 2 middleware.

Every DDS endpoint may announce, in discovery, the XTypes type information of its topic type (type identifiers,
and type objects on request through the type lookup service). When both sides announce it, Cyclone DDS matches a
reader and a writer only if it can resolve both types and finds them assignable. Fast DDS 3.2 (the middleware of
ROS 2 Kilted's `rmw_fastrtps_cpp`, measured with the `ros-rclpy[fastrtps]==9.1.2` wheels) announces type objects
that Cyclone DDS rejects for every type holding a sequence or an array (Cyclone logs
`ddsi_xt_type_init_impl with invalid type object`: the collection elements' TRY_CONSTRUCT flags are both 0), so
`sensor_msgs/JointState`, `Imu`, `Float64MultiArray` and `DiagnosticArray` never matched (a Fast DDS node listed
trot's topics and received nothing), while `Bool` and `Twist` did.

Cyclone DDS 11 can ignore the type information that one vendor sends (`Compatibility/IgnoreTypeInformation`,
added for exactly this Fast DDS): matching then falls back to the type name, which for ROS 2 types carries the
package, the name and (through the `typehash` USER_DATA, `typehash.py`) nothing that could differ between two
builds of the same `.msg`. trot ignores it from eProsima (vendor id 1.15) only; Cyclone DDS peers
(`rmw_cyclonedds_cpp`, vendor 1.16) keep the full assignability check.

The setting is one more fragment of `CYCLONEDDS_URI` (Cyclone merges every fragment of the list), added by
`use_interop` before a participant exists, so it composes with the user's own configuration and is inherited by
child processes. No middleware import here.
"""

from __future__ import annotations

import os
import re

EPROSIMA_VENDOR_ID = "1.15"  # Fast DDS (OMG-assigned DDS vendor id 0x010f)
INTEROP_XML = (
    '<CycloneDDS xmlns="https://cdds.io/config"><Domain id="any"><Compatibility>'
    f"<IgnoreTypeInformation>{EPROSIMA_VENDOR_ID}</IgnoreTypeInformation>"
    "</Compatibility></Domain></CycloneDDS>"
)
_SETS_IGNORE = re.compile(r"<IgnoreTypeInformation>")


def with_interop(uri: str) -> str:
    """`uri` (a CYCLONEDDS_URI: XML fragments and file paths separated by commas) with `INTEROP_XML` added, unless
    it already sets IgnoreTypeInformation inline (then the user's choice stands)."""
    if _SETS_IGNORE.search(uri):
        return uri
    return f"{uri},{INTEROP_XML}" if uri.strip() else INTEROP_XML


def use_interop() -> None:
    """Add `INTEROP_XML` to `CYCLONEDDS_URI` for the participants this process creates from now on (a domain that
    already has a participant in this process keeps the configuration it started with)."""
    os.environ["CYCLONEDDS_URI"] = with_interop(os.environ.get("CYCLONEDDS_URI", ""))
