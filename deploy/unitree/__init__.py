"""Unitree's own DDS interface to the Go2 (the `unitree_go` low-level types), for the `unitree` transport.

- `msgs`: LowCmd_/LowState_ and the structs they nest, as Cyclone DDS IDL structs (imports `cyclonedds`).
- `crc`: the CRC-32 LowCmd and LowState carry, over the C layout unitree_sdk2 computes it on.
- `convert`: policy-order joint arrays <-> LowCmd/LowState through the robot's hardware map.
- `channels`: the `rt/lowcmd` and `rt/lowstate` endpoints with the QoS trot gives each end.
- `transport`: `UnitreeTransport`, the deploy loop's link (`trot deploy --transport unitree`); `args`: its flags.

`UNITREE.md` next to the parent package documents the topics, types, layout, motor order and CRC.
Importing this package imports nothing else.
"""
