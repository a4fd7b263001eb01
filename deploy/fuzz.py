"""The serial decoder under fuzz: a stream of intact, random, truncated, bit-flipped and forged frames,
fed in random chunk sizes. `trot bench fuzz` runs a million of them and prints frames/s against the same
decoder on a clean stream of as many intact frames, measured in the same run; tests run a short one.

A pass: the decoder never raises, accepts exactly the frames sent intact (in order, none lost, nothing
else), and counts every forged frame (valid CRC, wrong type or size) as a payload error.
"""

from __future__ import annotations

import argparse
import time
import zlib
from dataclasses import dataclass

import numpy as np

from trot.deploy import protocol
from trot.deploy.protocol import (
    Command,
    ControlMode,
    Decoder,
    EStop,
    Heartbeat,
    Hello,
    HelloAck,
    MessageType,
    State,
    StatusFlags,
    encode,
    payload_size,
)

KINDS = ("intact", "random bytes", "truncated", "bit-flipped", "forged (valid CRC)")


def random_message(rng: np.random.Generator, msg_type: MessageType, num_joints: int, seq: int):
    """A message of the given type filled with random values."""
    vec = lambda size: rng.standard_normal(size).astype(np.float32)  # noqa: E731
    n = num_joints
    if msg_type == MessageType.HELLO:
        return Hello(n, rng.bytes(32), version=int(rng.integers(0, 1 << 16)))
    if msg_type == MessageType.HELLO_ACK:
        return HelloAck(n, b"pupper-fw 1.0", version=int(rng.integers(0, 1 << 16)))
    if msg_type == MessageType.STATE:
        status = StatusFlags(int(rng.integers(0, 1 << 16)))
        return State(seq, int(rng.integers(0, 1 << 63)), vec(n), vec(n), vec(n), vec(4), vec(3), vec(3), status)
    if msg_type == MessageType.COMMAND:
        mode = ControlMode(int(rng.integers(0, len(ControlMode))))
        return Command(seq, mode, vec(n), np.full(n, 5.0), np.full(n, 0.1), np.zeros(n))
    if msg_type == MessageType.HEARTBEAT:
        return Heartbeat(seq, int(rng.integers(0, 1 << 63)))
    return EStop(seq, int(rng.integers(0, 256)))


def forge(body: bytes) -> bytes:
    """A well-framed frame with a correct CRC around an arbitrary body (type byte + payload)."""
    body += zlib.crc32(body).to_bytes(4, "little")
    return protocol.DELIMITER + protocol.cobs_encode(body) + protocol.DELIMITER


@dataclass
class FuzzStream:
    data: bytes
    intact: list  # the messages sent intact, in order
    forged: int  # frames with a valid CRC around a wrong type or size
    kinds: dict  # KINDS name -> frames of that kind


def fuzz_stream(rng: np.random.Generator, count: int, num_joints: int) -> FuzzStream:
    """`count` frames, each one of KINDS at random."""
    types = list(MessageType)
    pool = [random_message(rng, types[i % len(types)], num_joints, i) for i in range(600)]
    frames = [encode(m) for m in pool]
    kinds = rng.integers(0, len(KINDS), count)
    picks = rng.integers(0, len(pool), count)
    cuts = rng.random(count)
    flips = rng.random((count, 3))
    bits = rng.integers(0, 8, (count, 3))
    num_flips = rng.integers(1, 4, count)
    noise = rng.bytes(1 << 20)
    noise_at = rng.integers(0, len(noise) - 300, count)
    noise_len = rng.integers(1, 300, count)
    forged_type = rng.integers(0, 256, count)
    forged_len = rng.integers(0, 150, count)

    pieces, intact, forged = [], [], 0
    for i in range(count):
        frame, kind = frames[picks[i]], kinds[i]
        if kind == 0:
            pieces.append(frame)
            intact.append(pool[picks[i]])
        elif kind == 1:
            pieces.append(noise[noise_at[i] : noise_at[i] + noise_len[i]])
        elif kind == 2:  # keep the leading delimiter, lose at least one byte of the body, then the line goes on
            # with a delimiter: random bytes right after a cut could, once in 65536, supply exactly the missing
            # bytes, and that would be an intact frame on the wire, not an error the decoder should catch.
            pieces.append(frame[: 1 + int(cuts[i] * (len(frame) - 2))] + protocol.DELIMITER)
        elif kind == 3:
            flipped = bytearray(frame)
            for j in range(num_flips[i]):
                flipped[int(flips[i, j] * len(frame))] ^= 1 << int(bits[i, j])
            pieces.append(bytes(flipped))
            if flipped == frame:  # two flips of the same bit cancel
                intact.append(pool[picks[i]])
        else:
            msg_type, size = int(forged_type[i]), int(forged_len[i])
            if msg_type in protocol._CLASSES and size == payload_size(msg_type, num_joints):
                size += 1
            start = noise_at[i]
            pieces.append(forge(bytes([msg_type]) + noise[start : start + size]))
            forged += 1
    counts = {name: int(np.count_nonzero(kinds == k)) for k, name in enumerate(KINDS)}
    return FuzzStream(b"".join(pieces), intact, forged, counts)


def decode_in_chunks(rng: np.random.Generator, stream: bytes, num_joints: int) -> tuple[Decoder, list, float]:
    """(decoder, messages, seconds) of feeding `stream` in random chunks of 1 byte to 8 KiB."""
    ends = np.cumsum(rng.integers(1, 8192, len(stream) // 2000 + 1))
    bounds = [0, *ends[ends < len(stream)].tolist(), len(stream)]
    decoder = Decoder(num_joints)
    start = time.perf_counter()
    received = [m for a, b in zip(bounds[:-1], bounds[1:]) for m in decoder.feed(stream[a:b])]
    return decoder, received, time.perf_counter() - start


def run_fuzz(count: int, num_joints: int = 12, seed: int = 0) -> dict:
    """Fuzz `count` frames and decode as many intact ones as the reference; every figure and the verdict."""
    rng = np.random.default_rng(seed)
    stream = fuzz_stream(rng, count, num_joints)
    decoder, received, seconds = decode_in_chunks(rng, stream.data, num_joints)
    clean = b"".join(encode(m) for m in stream.intact[: max(1, count // 5)]) * 5  # as many frames, all intact
    _, clean_received, clean_seconds = decode_in_chunks(rng, clean, num_joints)
    problems = []
    if received != stream.intact:
        problems.append(f"accepted {len(received)} frames; expected exactly the {len(stream.intact)} sent intact")
    if decoder.payload_errors != stream.forged:
        problems.append(f"{decoder.payload_errors} payload errors; expected {stream.forged} (the forged frames)")
    return {
        "frames": count,
        "bytes": len(stream.data),
        "kinds": stream.kinds,
        "seconds": seconds,
        "frames_per_s": count / seconds,
        "accepted": len(received),
        "intact_sent": len(stream.intact),
        "crc_errors": decoder.crc_errors,
        "framing_errors": decoder.framing_errors,
        "payload_errors": decoder.payload_errors,
        "bytes_discarded": decoder.bytes_discarded,
        "clean_frames_per_s": len(clean_received) / clean_seconds,
        "problems": problems,
    }


def format_fuzz(f: dict) -> str:
    kinds = ", ".join(f"{n} {name}" for name, n in f["kinds"].items())
    lines = [
        f"trot bench fuzz: {f['frames']:,} frames ({f['bytes'] / 1e6:.1f} MB): {kinds}",
        f"  decoded in {f['seconds']:.2f} s: {f['frames_per_s']:,.0f} frames/s "
        f"(reference, the same decoder on intact frames only: {f['clean_frames_per_s']:,.0f} frames/s, "
        f"ratio {f['frames_per_s'] / f['clean_frames_per_s']:.2f})",
        f"  accepted {f['accepted']:,} (sent intact {f['intact_sent']:,}); refused: CRC {f['crc_errors']:,}, "
        f"framing {f['framing_errors']:,}, payload {f['payload_errors']:,} (forged with a valid CRC); "
        f"{f['bytes_discarded']:,} bytes discarded",
        "  PASS: no exception, only intact frames accepted, every forged frame refused"
        if not f["problems"]
        else "  FAIL: " + "; ".join(f["problems"]),
    ]
    return "\n".join(lines)


def add_fuzz_args(p: argparse.ArgumentParser) -> None:
    """Flags of `trot bench fuzz`."""
    p.add_argument("--frames", type=int, default=1_000_000, help="mutated frames to decode (default 1000000)")
    p.add_argument("--joints", type=int, default=12, help="joint count of the frames (default 12, the Pupper)")
    p.add_argument("--seed", type=int, default=0)


def run_bench_fuzz(args: argparse.Namespace) -> int:
    """`trot bench fuzz`: 0 when the decoder passed, 1 when not."""
    figures = run_fuzz(args.frames, args.joints, args.seed)
    print(format_fuzz(figures), flush=True)
    return 0 if not figures["problems"] else 1
