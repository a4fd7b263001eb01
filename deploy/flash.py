"""`trot flash`: put a policy bundle on the robot (over ssh, or into a folder such as a mounted SD card).

What lands in the target folder:
  policy.onnx            the bundle the service runs
  policy.previous.onnx   the one it replaced (`trot flash --rollback` swaps them back)
  policy.onnx.sha256     the hash of policy.onnx, checked after every copy
  trot-deploy.service    a systemd unit running `trot deploy` with the chosen transport
The bundle is checked against the robot contract before anything is copied.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from trot.deploy.bundle import BundleError, check_contract, load_bundle

POLICY, PREVIOUS, HASH, UNIT = "policy.onnx", "policy.previous.onnx", "policy.onnx.sha256", "trot-deploy.service"
SSH_TARGET = re.compile(r"^[A-Za-z0-9._-]+@[A-Za-z0-9._-]+$")


class FlashError(RuntimeError):
    """Flashing stopped; the message says at which step and why."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _put_text(target, rel: str, text: str) -> None:
    """Write `text` to `rel` on any target through its atomic `put`."""
    with tempfile.NamedTemporaryFile("w", delete=False, suffix=".tmp") as f:
        f.write(text)
    try:
        target.put(Path(f.name), rel)
    finally:
        os.unlink(f.name)


class DirTarget:
    """A folder on this machine (a mounted SD card, a staging folder)."""

    def __init__(self, root: str):
        self.root = Path(root).expanduser()
        self.name = str(self.root)

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def exists(self, rel: str) -> bool:
        return (self.root / rel).exists()

    def move(self, src: str, dst: str) -> None:
        os.replace(self.root / src, self.root / dst)

    def put(self, local: Path, rel: str) -> None:
        tmp = self.root / f".{rel}.tmp"
        shutil.copyfile(local, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.root / rel)

    def write_text(self, rel: str, text: str) -> None:
        _put_text(self, rel, text)

    def sha256(self, rel: str) -> str:
        return sha256_file(self.root / rel)

    def path(self, rel: str) -> str:
        return str(self.root.resolve() / rel)


class SshTarget:
    """`user@host:DIR` through the system's OpenSSH (`ssh` and `scp`)."""

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
        return shlex.quote(f"{self.root}/{rel}")

    def prepare(self) -> None:
        self._ssh(f"mkdir -p {shlex.quote(self.root)}")

    def exists(self, rel: str) -> bool:
        return self._ssh(f"test -e {self._q(rel)} && echo yes || echo no").strip() == "yes"

    def move(self, src: str, dst: str) -> None:
        self._ssh(f"mv -f {self._q(src)} {self._q(dst)}")

    def put(self, local: Path, rel: str) -> None:
        tmp = f"{self.root}/.{rel}.tmp"
        # Options are shared with ssh: use the spelling both accept (-o Port=2222, -i KEY).
        out = subprocess.run(["scp", "-q", *self.opts, str(local), f"{self.dest}:{tmp}"],
                             capture_output=True, text=True, timeout=300)  # fmt: skip
        if out.returncode != 0:
            raise FlashError(f"scp to {self.dest}:{tmp} failed ({out.returncode}): {out.stderr.strip()}")
        self._ssh(f"sync && mv -f {shlex.quote(tmp)} {self._q(rel)}")

    def write_text(self, rel: str, text: str) -> None:
        _put_text(self, rel, text)

    def sha256(self, rel: str) -> str:
        return self._ssh(f"sha256sum {self._q(rel)}").split()[0]

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}"


def make_target(target: str, remote_dir: str, ssh_options: list[str] | None = None):
    if SSH_TARGET.match(target):
        return SshTarget(target, remote_dir, ssh_options)
    return DirTarget(target)


def systemd_unit(policy_path: str, robot: str, transport: str, port: str) -> str:
    """The unit that runs the deploy loop at boot, restarts it, and asks for real-time priority."""
    args = f"--bundle {policy_path} --robot {robot} --transport {transport}"
    if transport == "serial":
        args += f" --port {port}"
    return f"""[Unit]
Description=trot deploy loop ({robot}, {transport})
After=network-online.target

[Service]
Type=simple
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


def flash(bundle_path: Path, target, robot, transport: str = "serial", port: str = "/dev/ttyACM0") -> list[str]:
    """Check, copy, verify; return what was done, one line per step."""
    bundle = load_bundle(bundle_path)
    check_contract(bundle, robot)  # refuse before anything is copied
    digest = sha256_file(bundle_path)
    done = [f"checked {bundle_path} against robot '{robot.name}' (contract {robot.contract_sha256()[:12]})"]
    target.prepare()
    if target.exists(POLICY):
        target.move(POLICY, PREVIOUS)
        done.append(f"kept the previous policy as {target.path(PREVIOUS)}")
    target.put(bundle_path, POLICY)
    copied = target.sha256(POLICY)
    if copied != digest:
        raise FlashError(f"{target.path(POLICY)}: sha256 {copied} after copy, expected {digest}")
    target.write_text(HASH, f"{digest}  {POLICY}\n")
    done.append(f"copied {bundle_path.name} to {target.path(POLICY)} (sha256 {digest[:16]}… verified)")
    target.write_text(UNIT, systemd_unit(target.path(POLICY), robot.name, transport, port))
    done.append(f"wrote {target.path(UNIT)} (trot deploy --transport {transport})")
    return done


def rollback(target) -> list[str]:
    """Swap policy.onnx and policy.previous.onnx back, verifying the restored file's hash."""
    if not target.exists(PREVIOUS):
        raise FlashError(f"{target.path(PREVIOUS)}: no previous policy to roll back to")
    target.move(POLICY, ".policy.swap")
    target.move(PREVIOUS, POLICY)
    target.move(".policy.swap", PREVIOUS)
    digest = target.sha256(POLICY)
    target.write_text(HASH, f"{digest}  {POLICY}\n")
    return [f"restored {target.path(POLICY)} (sha256 {digest[:16]}…); the rolled-back one is {target.path(PREVIOUS)}"]


def run_flash(args: argparse.Namespace) -> int:
    from trot.robots import load_robot

    ssh_options = shlex.split(args.ssh_options) if args.ssh_options else []
    try:
        target = make_target(args.target, args.remote_dir, ssh_options)
        if args.rollback:
            lines = rollback(target)
        else:
            if not args.bundle:
                raise FlashError("a BUNDLE is needed (or --rollback)")
            bundle = load_bundle(args.bundle)
            robot = load_robot(args.robot or bundle.meta["robot"]["name"])
            lines = flash(Path(args.bundle), target, robot, args.transport, args.port)
    except (BundleError, FlashError, FileNotFoundError) as e:
        raise SystemExit(f"trot flash: {e}") from None
    for line in lines:
        print(f"trot flash: {line}")
    if not args.rollback:
        unit = target.path(UNIT)
        print(f"trot flash: on the robot, once: sudo cp {unit} /etc/systemd/system/ && sudo systemctl enable --now "
              "trot-deploy; after each flash: sudo systemctl restart trot-deploy")  # fmt: skip
    return 0
