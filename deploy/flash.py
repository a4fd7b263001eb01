"""`trot flash`: put a policy bundle on the robot (over ssh, or into a folder such as a mounted SD card).

What lands in the target folder:
  policies/<sha256>.onnx         one file per flashed bundle, named by its hash, never changed once there
  policies/<sha256>.onnx.sha256  its hash file (`sha256sum` format), written before it can become current
  policies/<sha256>.onnx.gate.json   the gate record of that exact file (`trot.gate_record`), when there is one
  policies/<sha256>.onnx.force.json  what `--force` overrode, when a bundle without a passing record was flashed
  current.json                   the pointer: {"current": "policies/<sha>.onnx", "previous": ... or null}
  trot-deploy.service            a systemd unit running `trot deploy --bundle <folder>` (it reads the pointer)
  trot-watchdog.service          with --transport ros2: a unit running `trot watchdog`, which damps the motors
                                 through the robot's own controllers when the deploy loop stops commanding

Every file is written to a temporary name, fsync'd, renamed into place, and its folder fsync'd. A flash
copies and verifies the new version first, then switches `current.json` in one rename; a rollback is
that one rename alone. So a flash or rollback killed at any point leaves the pointer naming one complete
policy whose hash file matches, the old one or the new one, and `--rollback` works from there.

Before anything is copied the bundle goes through the same checks as `trot deploy`: integrity, the
contract field by field against the robot's (joint order included); then the gate's verdict: a bundle without
a passing gate record for its exact bytes (`<bundle>.gate.json` beside it, written by a full `trot gate` run) is
refused, naming why, unless `--force`, which is recorded on the robot beside the policy.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from trot.deploy.bundle import BundleError, check_contract, load_bundle
from trot.gate_record import SUFFIX as GATE_SUFFIX
from trot.gate_record import GateRecordError, find_record, record_path, require_pass
from trot.gate_record import file_sha256 as sha256_file

POINTER, VERSIONS, UNIT = "current.json", "policies", "trot-deploy.service"
WATCHDOG_UNIT = "trot-watchdog.service"
# Flags of the deploy unit's command line that `trot watchdog` takes too (the graph to join, the profile).
WATCHDOG_FLAGS = ("--ros_namespace", "--domain_id", "--ros_topic", "--ros_qos", "--ros_profile", "--ros2_backend")
FORCE_SUFFIX = ".force.json"  # beside a version flashed with --force: what the force overrode
SSH_TARGET = re.compile(r"^[A-Za-z0-9._-]+@[A-Za-z0-9._-]+$")
_VERSION_NAME = re.compile(rf"^{VERSIONS}/[0-9a-f]{{64}}\.onnx$")


class FlashError(RuntimeError):
    """Flashing stopped, or a flashed policy failed its check; the message says where and why."""


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- the pointer ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pointer:
    current: str  # "policies/<sha256>.onnx", relative to the target folder
    previous: str | None

    def to_text(self) -> str:
        return json.dumps({"current": self.current, "previous": self.previous}) + "\n"

    @staticmethod
    def parse(text: str, where: str) -> Pointer:
        """The pointer in `text`; FlashError naming the file and what was expected."""
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise FlashError(f"{where}: not valid JSON ({e})") from e
        ok = isinstance(doc, dict) and set(doc) == {"current", "previous"} and isinstance(doc["current"], str)
        names = [doc.get("current"), doc.get("previous")] if ok else []
        if not ok or not all(n is None or (isinstance(n, str) and _VERSION_NAME.match(n)) for n in names):
            expected = '{"current": "policies/<sha256>.onnx", "previous": "policies/<sha256>.onnx" or null}'
            raise FlashError(f"{where}: {text.strip()!r}; expected {expected}")
        return Pointer(doc["current"], doc["previous"])


def version_name(digest: str) -> str:
    return f"{VERSIONS}/{digest}.onnx"


def hash_text(digest: str) -> str:
    """A version's hash file, in `sha256sum -c` format (run in policies/)."""
    return f"{digest}  {digest}.onnx\n"


def check_hash_file(name: str, hash_file_text: str | None, actual: str, where: str) -> None:
    """Refuse a version whose hash file is missing or disagrees with the file's sha256 or its name."""
    if hash_file_text is None:
        raise FlashError(f"{where}: no hash file {name}.sha256: the policy was not completely flashed")
    recorded = hash_file_text.split()[0] if hash_file_text.split() else ""
    if not (recorded == actual == Path(name).stem):
        raise FlashError(f"{where}: sha256 {actual} does not match its hash file ({recorded or 'empty'}): "
                         "the file changed after it was flashed; flash it again")  # fmt: skip


def resolve_flashed(path: str | Path) -> Path:
    """The bundle file to run for `path`, its hash file checked: a flash target folder's current policy
    (through its pointer), or a bundle file (checked against `<file>.sha256` when there is one)."""
    path = Path(path)
    if path.is_dir():
        pointer_path = path / POINTER
        if not pointer_path.is_file():
            raise FlashError(f"{path}: no {POINTER}: no policy has been flashed to this folder (`trot flash`)")
        pointer = Pointer.parse(pointer_path.read_text(), str(pointer_path))
        file = path / pointer.current
        if not file.is_file():
            raise FlashError(f"{pointer_path}: current policy {file} does not exist")
        hash_file = file.with_name(file.name + ".sha256")
        check_hash_file(pointer.current, hash_file.read_text() if hash_file.is_file() else None,
                        sha256_file(file), str(file))  # fmt: skip
        return file
    hash_file = path.with_name(path.name + ".sha256")
    if path.is_file() and hash_file.is_file():
        recorded = (hash_file.read_text().split() or [""])[0]
        if recorded != sha256_file(path):
            raise FlashError(f"{path}: sha256 {sha256_file(path)} does not match {hash_file} ({recorded or 'empty'})")
    return path


# ---- targets --------------------------------------------------------------------------------------


class DirTarget:
    """A folder on this machine (a mounted SD card, a staging folder)."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()
        self.name = str(self.root)

    def prepare(self) -> None:
        (self.root / VERSIONS).mkdir(parents=True, exist_ok=True)
        _fsync_dir(self.root)

    def exists(self, rel: str) -> bool:
        return (self.root / rel).exists()

    def read_text(self, rel: str) -> str | None:
        file = self.root / rel
        return file.read_text() if file.is_file() else None

    def put(self, local: Path, rel: str) -> None:
        """Copy `local` to `rel` atomically: temporary name, fsync, rename, fsync of the folder."""
        dst = self.root / rel
        tmp = dst.with_name(f".{dst.name}.tmp")
        shutil.copyfile(local, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dst)
        _fsync_dir(dst.parent)

    def sha256(self, rel: str) -> str:
        return sha256_file(self.root / rel)

    def listdir(self, rel: str) -> list[str]:
        return sorted(p.name for p in (self.root / rel).iterdir())

    def remove(self, rel: str) -> None:
        (self.root / rel).unlink(missing_ok=True)

    def path(self, rel: str = "") -> str:
        return str(self.root.resolve() / rel) if rel else str(self.root.resolve())


class SshTarget:
    """`user@host:DIR` through the system's OpenSSH (`ssh` and `scp`); every step is one remote command."""

    def __init__(self, dest: str, root: str, ssh_options: list[str] | None = None):
        if not SSH_TARGET.match(dest):
            raise FlashError(f"--target '{dest}': expected user@host or a folder")
        self.dest, self.root, self.opts = dest, root.rstrip("/"), ssh_options or []
        self.name = f"{dest}:{self.root}"

    def _ssh(self, command: str) -> str:
        out = subprocess.run(["ssh", *self.opts, self.dest, command], capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise FlashError(f"ssh {self.dest} '{command}' failed ({out.returncode}): {out.stderr.strip()}")
        return out.stdout

    def _q(self, rel: str) -> str:
        return shlex.quote(f"{self.root}/{rel}" if rel else self.root)

    def prepare(self) -> None:
        self._ssh(f"mkdir -p {self._q(VERSIONS)} && sync {self._q('')}")

    def exists(self, rel: str) -> bool:
        return self._ssh(f"test -e {self._q(rel)} && echo yes || echo no").strip() == "yes"

    def read_text(self, rel: str) -> str | None:
        out = self._ssh(f"if test -f {self._q(rel)}; then echo yes; cat {self._q(rel)}; else echo no; fi")
        flag, _, text = out.partition("\n")
        return text if flag == "yes" else None

    def put(self, local: Path, rel: str) -> None:
        """scp to a temporary name, then one remote command: fsync it, rename it, fsync the folder."""
        folder, name = os.path.split(rel)
        tmp = f"{folder}/.{name}.tmp" if folder else f".{name}.tmp"
        # Options are shared with ssh: use the spelling both accept (-o Port=2222, -i KEY).
        out = subprocess.run(["scp", "-q", *self.opts, str(local), f"{self.dest}:{self.root}/{tmp}"],
                             capture_output=True, text=True, timeout=300)  # fmt: skip
        if out.returncode != 0:
            raise FlashError(f"scp to {self.dest}:{self.root}/{tmp} failed ({out.returncode}): {out.stderr.strip()}")
        self._ssh(f"sync {self._q(tmp)} && mv -f {self._q(tmp)} {self._q(rel)} && sync {self._q(folder)}")

    def sha256(self, rel: str) -> str:
        return self._ssh(f"sha256sum {self._q(rel)}").split()[0]

    def listdir(self, rel: str) -> list[str]:
        return sorted(self._ssh(f"ls -1A {self._q(rel)}").split())

    def remove(self, rel: str) -> None:
        self._ssh(f"rm -f {self._q(rel)}")

    def path(self, rel: str = "") -> str:
        return f"{self.root}/{rel}" if rel else self.root


def make_target(target: str, remote_dir: str, ssh_options: list[str] | None = None):
    if SSH_TARGET.match(target):
        return SshTarget(target, remote_dir, ssh_options)
    return DirTarget(target)


def _put_text(target, rel: str, text: str) -> None:
    """Write `text` to `rel` through the target's atomic `put`."""
    with tempfile.NamedTemporaryFile("w", delete=False, suffix=".tmp") as f:
        f.write(text)
    try:
        target.put(Path(f.name), rel)
    finally:
        os.unlink(f.name)


def read_pointer(target) -> Pointer | None:
    text = target.read_text(POINTER)
    return None if text is None else Pointer.parse(text, target.path(POINTER))


# ---- flash and rollback -----------------------------------------------------------------------------


def systemd_unit(folder: str, robot: str, transport_args: list[str]) -> str:
    """The unit that runs the deploy loop at boot on the folder's current policy, restarts it, and asks
    for real-time priority; over ROS 2 it wants the watchdog's unit running beside it."""
    args = " ".join(shlex.quote(a) for a in ["--bundle", folder, "--robot", robot, *transport_args])
    transport = _transport(transport_args)
    wants = f"Wants={WATCHDOG_UNIT}\nAfter={WATCHDOG_UNIT}\n" if transport == "ros2" else ""
    return f"""[Unit]
Description=trot deploy loop ({robot}, {transport})
After=network-online.target
{wants}
[Service]
Type=simple
# --bundle is the flash folder: trot deploy runs the policy its current.json names, after checking its hash file.
ExecStart=/usr/bin/env trot deploy {args}
Restart=on-failure
RestartSec=2
# Real-time scheduling where the kernel permits it; the loop still runs without it.
CPUSchedulingPolicy=fifo
CPUSchedulingPriority=50
LimitRTPRIO=50
Nice=-10

[Install]
WantedBy=multi-user.target
"""


def _transport(transport_args: list[str]) -> str:
    """The --transport value of a unit's command line ("" when absent)."""
    i = transport_args.index("--transport") + 1 if "--transport" in transport_args else len(transport_args)
    return transport_args[i] if i < len(transport_args) else ""


def watchdog_args(transport_args: list[str]) -> list[str]:
    """The deploy unit's ROS 2 flags that `trot watchdog` takes (the graph to join, the profile, the backend)."""
    out, i = [], 0
    while i < len(transport_args):
        flag = transport_args[i]
        if flag in WATCHDOG_FLAGS and i + 1 < len(transport_args):
            out += [flag, transport_args[i + 1]]
            i += 2
            continue
        if flag == "--dds_loopback":
            out.append(flag)
        i += 1
    return out


def watchdog_unit(robot: str, transport_args: list[str]) -> str:
    """The unit of `trot watchdog`: its own process, started at boot and restarted whatever happens to it or to the
    deploy loop (it must outlive a crashed deploy process), at a real-time priority above the loop's."""
    args = " ".join(shlex.quote(a) for a in ["--robot", robot, *watchdog_args(transport_args)])
    return f"""[Unit]
Description=trot watchdog ({robot}): damping when trot deploy stops commanding
After=network-online.target

[Service]
Type=simple
ExecStart=/usr/bin/env trot watchdog {args}
Restart=always
RestartSec=1
CPUSchedulingPolicy=fifo
CPUSchedulingPriority=60
LimitRTPRIO=60
Nice=-10

[Install]
WantedBy=multi-user.target
"""


def gate_verdict(bundle_path: Path, digest: str, robot, force: bool) -> str | None:
    """None when the bundle has a passing gate record for these exact bytes, judged at the robot's declared latency
    or longer; what `--force` overrides otherwise. Without force, FlashError saying why the bundle is refused (no
    record, another file's, what failed, or a shorter latency than the robot's)."""
    try:
        require_pass(bundle_path, digest, robot.actuation_latency_s)
        return None
    except GateRecordError as e:
        if not force:
            raise FlashError(f"refused: {e}. Only a policy that passed the full gate is flashed; --force flashes "
                             "it anyway and records that on the robot") from None  # fmt: skip
        return str(e)


def force_note(overridden: str, digest: str) -> str:
    """The JSON written beside a version flashed with --force: what was overridden, when, by whom, from where."""
    return json.dumps({"forced": True, "bundle_sha256": digest, "overridden": overridden,
                       "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       "user": getpass.getuser(), "host": platform.node()}, indent=1) + "\n"  # fmt: skip


def flash(bundle_path: Path, target, robot, transport_args: list[str] | None = None, force: bool = False) -> list[str]:
    """Check as `trot deploy` does and the gate's verdict, copy and verify the new version with its gate record,
    switch the pointer; one line per step. force: flash a bundle without a passing gate record, and say so on the
    robot (`policies/<sha256>.onnx.force.json`)."""
    bundle_path = resolve_flashed(bundle_path)  # as deploy: a flash folder's current policy, a hash file beside it
    bundle = load_bundle(bundle_path)  # integrity: graph, weights and every metadata field
    check_contract(bundle, robot)  # the contract field by field, joint order included: refuse before any copy
    digest, name = sha256_file(bundle_path), version_name(sha256_file(bundle_path))
    done = [f"checked {bundle_path} (integrity, contract {robot.contract_sha256()[:12]} of robot '{robot.name}')"]
    overridden = gate_verdict(bundle_path, digest, robot, force)  # refuse before any copy
    if overridden is None:
        done.append(f"gate: {find_record(bundle_path, digest)[1]}")
    target.prepare()
    pointer = read_pointer(target)
    if not (target.exists(name) and target.sha256(name) == digest):
        target.put(bundle_path, name)
        copied = target.sha256(name)
        if copied != digest:
            raise FlashError(f"{target.path(name)}: sha256 {copied} after copy, expected {digest}")
    _put_text(target, name + ".sha256", hash_text(digest))
    done.append(f"copied {bundle_path.name} to {target.path(name)} (sha256 {digest[:16]}… verified, hash file written)")
    done += _put_gate_files(target, name, bundle_path, digest, overridden)
    transport_args = transport_args or ["--transport", "serial", "--port", "/dev/ttyACM0"]
    _put_text(target, UNIT, systemd_unit(target.path(), robot.name, transport_args))
    done.append(f"wrote {target.path(UNIT)} (trot deploy {' '.join(transport_args)})")
    if _transport(transport_args) == "ros2":
        _put_text(target, WATCHDOG_UNIT, watchdog_unit(robot.name, transport_args))
        shown = " ".join(["--robot", robot.name, *watchdog_args(transport_args)])
        done.append(f"wrote {target.path(WATCHDOG_UNIT)} (trot watchdog {shown})")
    if pointer is not None and pointer.current == name:
        done.append(f"{name} was already the current policy")
    else:
        previous = pointer.current if pointer is not None else None
        _put_text(target, POINTER, Pointer(name, previous).to_text())  # the switch: one rename
        done.append(f"switched {target.path(POINTER)} to {name}" + (f" (previous {previous})" if previous else ""))
    _prune(target, read_pointer(target))
    return done


def _put_gate_files(target, name: str, bundle_path: Path, digest: str, overridden: str | None) -> list[str]:
    """Beside the version on the target: its gate record (when one is for these bytes) and, after --force, the note
    of what was overridden; a stale one of either from an earlier flash of the same version is removed."""
    done = []
    try:
        record, _ = find_record(bundle_path, digest)
    except GateRecordError:  # unreadable: only a --force flash gets here, and its note says so
        record = None
    if record is not None:
        target.put(record_path(bundle_path), name + GATE_SUFFIX)
        done.append(f"copied its gate record to {target.path(name + GATE_SUFFIX)}")
    else:
        target.remove(name + GATE_SUFFIX)
    if overridden is not None:
        _put_text(target, name + FORCE_SUFFIX, force_note(overridden, digest))
        note = target.path(name + FORCE_SUFFIX)
        done.append(f"FORCED without a passing gate record ({overridden}); recorded in {note}")
    else:
        target.remove(name + FORCE_SUFFIX)
    return done


def _prune(target, pointer: Pointer) -> None:
    """Remove versions the pointer no longer names, and temporary files a killed flash left."""
    keep = {Path(n).name for n in (pointer.current, pointer.previous) if n}
    for name in target.listdir(VERSIONS):
        version = name[: name.index(".onnx") + 5] if ".onnx" in name else name  # the version a side file is of
        if version not in keep:
            target.remove(f"{VERSIONS}/{name}")


def rollback(target) -> list[str]:
    """Make the previous policy current again (one rename of the pointer), after checking its hash file."""
    pointer = read_pointer(target)
    if pointer is None:
        raise FlashError(f"{target.path(POINTER)}: no policy has been flashed here")
    if pointer.previous is None:
        raise FlashError(f"{target.path(POINTER)}: no previous policy to roll back to")
    digest = target.sha256(pointer.previous) if target.exists(pointer.previous) else None
    if digest is None:
        raise FlashError(f"{target.path(pointer.previous)}: the previous policy is missing")
    check_hash_file(pointer.previous, target.read_text(pointer.previous + ".sha256"), digest,
                    target.path(pointer.previous))  # fmt: skip
    _put_text(target, POINTER, Pointer(pointer.previous, pointer.current).to_text())
    return [f"restored {target.path(pointer.previous)} (sha256 {digest[:16]}… matches its hash file); "
            f"the rolled-back one, {pointer.current}, is now the previous policy"]  # fmt: skip


def add_flash_args(p: argparse.ArgumentParser) -> None:
    """Flags of `trot flash`: the target, the robot, and the transport the unit runs (the deploy registry's)."""
    from trot.deploy.link import add_transport_args

    p.add_argument("bundle", nargs="?", help="policy bundle (.onnx); not needed with --rollback")
    p.add_argument("--target", required=True, help="user@host (OpenSSH) or a folder, e.g. a mounted SD card")
    p.add_argument("--remote_dir", default="trot", help="folder on the robot for user@host targets (default ~/trot)")
    p.add_argument("--robot", default=None, help="robot to check against (default: the bundle's)")
    p.add_argument("--rollback", action="store_true", help="put the previous policy back")
    p.add_argument(
        "--force", action="store_true",
        help="flash a bundle without a passing gate record for its exact bytes (<bundle>.gate.json, written by a "
        "full `trot gate` run); recorded on the robot beside the policy",
    )  # fmt: skip
    p.add_argument("--ssh_options", default="", help="extra ssh/scp options, e.g. '-o Port=2222 -i key'")
    add_transport_args(p)


def run_flash(args: argparse.Namespace) -> int:
    """`trot flash BUNDLE --target T` or `trot flash --rollback --target T`."""
    from trot.deploy.link import TRANSPORTS
    from trot.robots import ContractError, load_robot

    ssh_options = shlex.split(args.ssh_options) if args.ssh_options else []
    try:
        target = make_target(args.target, args.remote_dir, ssh_options)
        if args.rollback:
            lines = rollback(target)
        else:
            if not args.bundle:
                raise FlashError("a BUNDLE is needed (or --rollback)")
            bundle = load_bundle(args.bundle)
            robot = load_robot(args.robot or bundle.contract.name)
            transport_args = ["--transport", args.transport, *TRANSPORTS[args.transport].unit_args(args)]
            lines = flash(Path(args.bundle), target, robot, transport_args, force=getattr(args, "force", False))
    except (BundleError, ContractError, FlashError, GateRecordError, FileNotFoundError, ValueError) as e:
        raise SystemExit(f"trot flash: {e}") from None
    for line in lines:
        print(f"trot flash: {line}")
    if not args.rollback and args.transport == "ros2":
        units = f"{target.path(UNIT)} {target.path(WATCHDOG_UNIT)}"
        print(f"trot flash: on the robot, once: sudo cp {units} /etc/systemd/system/ && sudo systemctl enable --now "
              "trot-watchdog trot-deploy; after each flash or rollback: sudo systemctl restart trot-deploy "
              "(the watchdog keeps running)")  # fmt: skip
    elif not args.rollback:
        unit = target.path(UNIT)
        print(f"trot flash: on the robot, once: sudo cp {unit} /etc/systemd/system/ && sudo systemctl enable --now "
              "trot-deploy; after each flash or rollback: sudo systemctl restart trot-deploy")  # fmt: skip
    return 0
