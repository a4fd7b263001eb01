"""Unitree's own DDS interface to the Go2 (the `unitree_go` low-level types and the `unitree_api` calls of its
services), for the `unitree` transport.

- `msgs`: LowCmd_/LowState_ and the structs they nest, as Cyclone DDS IDL structs (imports `cyclonedds`).
- `crc`: the CRC-32 LowCmd and LowState carry, over the C layout unitree_sdk2 computes it on.
- `convert`: policy-order joint arrays <-> LowCmd/LowState through the robot's hardware map.
- `channels`: the `rt/lowcmd` and `rt/lowstate` endpoints, and the services', with the QoS trot gives each end.
- `api_msgs`: the services' Request_/Response_; `rpc`: a client of one service; `motion`: the motion switcher and
  the sport service's StandDown: check, release and give back the robot's motion service.
- `transport`: `UnitreeTransport`, the deploy loop's link (`trot deploy --transport unitree`); `args`: its flags.

`UNITREE.md` next to the parent package documents the topics, types, layout, motor order, CRC and the calls.
Importing this package imports nothing else.
"""
