"""`trot flash`: versioned files and one pointer switch; the same checks as `trot deploy` and the gate's verdict
before anything is copied; rollback; a flash or rollback killed at every step leaves one complete, hash-checked policy.

The tests of copying, rollback and crash safety flash bundles whose gate record (`<bundle>.gate.json`) the test
writes as passing (`write_gate_record`): they take the gate's verdict as given. The tests under "the gate's
verdict" check what flash does with a record that is missing, failing, another file's, or overridden by --force."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import onnx
import pytest
from conftest import write_gate_record

from trot.deploy.bundle import BundleError
from trot.deploy.flash import (
    POINTER,
    DirTarget,
    FlashError,
    SshTarget,
    flash,
    resolve_flashed,
    rollback,
    sha256_file,
)
from trot.gate_record import record_path
from trot.robots import load_robot

ROBOT = load_robot("pupper_v3")
KILLED = Path(__file__).with_name("flash_killed.py")


@pytest.fixture(scope="module")
def tiny_bundle(tiny_bundle, tmp_path_factory):
    """The session's tiny bundle, copied, with a passing gate record beside it (see the module docstring)."""
    out = tmp_path_factory.mktemp("gated") / "tiny.onnx"
    shutil.copyfile(tiny_bundle, out)
    write_gate_record(out)
    return out


def second_bundle(tiny_bundle, tmp_path, run="second", gated=True):
    """The same policy exported under another run name: a different, valid bundle for the same robot (with a
    passing gate record beside it unless gated=False)."""
    from trot.bundle import read_bundle_meta
    from trot.train.export import write_bundle

    meta = read_bundle_meta(tiny_bundle)
    meta = replace(meta, training=type(meta.training)(run=run), integrity=None)
    out = tmp_path / f"{run}.onnx"
    write_bundle(onnx.load(str(tiny_bundle)), meta, out)
    if gated:
        write_gate_record(out)
    return out


def state(folder: Path) -> tuple[str, str | None]:
    """(sha256 of the current policy, of the previous one) after checking each against its hash file."""
    pointer = json.loads((folder / POINTER).read_text())
    current = resolve_flashed(folder)
    assert current == folder / pointer["current"]
    previous = None
    if pointer["previous"]:
        previous = sha256_file(folder / pointer["previous"])
        assert (folder / (pointer["previous"] + ".sha256")).read_text().split()[0] == previous
    return sha256_file(current), previous


def test_flash_to_folder_copies_verifies_switches_and_writes_the_unit(tiny_bundle, tmp_path):
    target = DirTarget(tmp_path / "robot")
    lines = flash(tiny_bundle, target, ROBOT, ["--transport", "serial", "--port", "/dev/ttyAMA0", "--baud", "115200"])
    digest = sha256_file(tiny_bundle)
    assert state(tmp_path / "robot") == (digest, None)
    assert (tmp_path / "robot" / "policies" / f"{digest}.onnx.sha256").read_text() == f"{digest}  {digest}.onnx\n"
    unit = (tmp_path / "robot" / "trot-deploy.service").read_text()
    assert f"trot deploy --bundle {(tmp_path / 'robot').resolve()} --robot pupper_v3" in unit
    assert "--transport serial --port /dev/ttyAMA0 --baud 115200" in unit
    assert "Restart=on-failure" in unit and "CPUSchedulingPolicy=fifo" in unit
    assert any("verified" in line for line in lines)


def test_reflash_keeps_the_previous_policy_rollback_swaps_and_old_versions_are_pruned(tiny_bundle, tmp_path):
    folder = tmp_path / "robot"
    target = DirTarget(folder)
    b, c = second_bundle(tiny_bundle, tmp_path, "b"), second_bundle(tiny_bundle, tmp_path, "c")
    a, b_hash, c_hash = (sha256_file(p) for p in (tiny_bundle, b, c))
    flash(tiny_bundle, target, ROBOT)
    flash(b, target, ROBOT)
    assert state(folder) == (b_hash, a)
    rollback(target)
    assert state(folder) == (a, b_hash)
    rollback(target)
    assert state(folder) == (b_hash, a)
    flash(c, target, ROBOT)
    assert state(folder) == (c_hash, b_hash)
    assert sorted(p.name for p in (folder / "policies").iterdir()) == sorted(
        f"{h}.onnx{suffix}" for h in (b_hash, c_hash) for suffix in ("", ".sha256", ".gate.json"))  # fmt: skip


def test_rollback_without_a_previous_policy_is_refused(tiny_bundle, tmp_path):
    target = DirTarget(tmp_path / "robot")
    pointer = (tmp_path / "robot").resolve() / POINTER
    with pytest.raises(FlashError) as err:
        rollback(target)
    assert str(err.value) == f"{pointer}: no policy has been flashed here"
    flash(tiny_bundle, target, ROBOT)
    with pytest.raises(FlashError) as err:
        rollback(target)
    assert str(err.value) == f"{pointer}: no previous policy to roll back to"


def test_rollback_refuses_a_missing_or_changed_previous_policy_naming_it(tiny_bundle, tmp_path):
    folder = tmp_path / "robot"
    target = DirTarget(folder)
    flash(tiny_bundle, target, ROBOT)
    flash(second_bundle(tiny_bundle, tmp_path), target, ROBOT)
    before = (folder / POINTER).read_text()
    previous = folder.resolve() / "policies" / f"{sha256_file(tiny_bundle)}.onnx"
    hash_file = previous.with_name(previous.name + ".sha256")
    hash_file.write_text(hash_file.read_text().replace(sha256_file(tiny_bundle)[:8], "00000000"))
    with pytest.raises(FlashError) as err:
        rollback(target)
    assert str(err.value).startswith(f"{previous}: sha256 {sha256_file(tiny_bundle)} does not match its hash file")
    previous.unlink()
    with pytest.raises(FlashError) as err:
        rollback(target)
    assert str(err.value) == f"{previous}: the previous policy is missing"
    assert (folder / POINTER).read_text() == before  # the pointer never moved


def test_a_damaged_pointer_is_refused_naming_it(tiny_bundle, tmp_path):
    folder = tmp_path / "robot"
    flash(tiny_bundle, DirTarget(folder), ROBOT)
    (folder / POINTER).write_text("{")
    for step in (lambda: flash(tiny_bundle, DirTarget(folder), ROBOT), lambda: rollback(DirTarget(folder))):
        with pytest.raises(FlashError, match=rf"^{re.escape(str(folder.resolve() / POINTER))}: not valid JSON \("):
            step()
    with pytest.raises(FlashError, match=rf"^{re.escape(str(folder / POINTER))}: not valid JSON \("):
        resolve_flashed(folder)  # what `trot deploy` runs


def test_a_flashed_policy_without_its_hash_file_is_refused(tiny_bundle, tmp_path):
    folder = tmp_path / "robot"
    flash(tiny_bundle, DirTarget(folder), ROBOT)
    current = resolve_flashed(folder)
    current.with_name(current.name + ".sha256").unlink()
    with pytest.raises(FlashError) as err:
        resolve_flashed(folder)
    name = f"policies/{current.name}"
    assert str(err.value) == f"{current}: no hash file {name}.sha256: the policy was not completely flashed"


def test_bundle_for_another_robot_is_refused_before_anything_is_copied(tiny_bundle, tmp_path):
    folder = tmp_path / "other_robot"
    shutil.copytree(ROBOT.folder, folder, ignore=shutil.ignore_patterns("policies"))
    toml = folder / "robot.toml"
    toml.write_text(toml.read_text().replace('name = "pupper_v3"', 'name = "other_dog"'))
    target_dir = tmp_path / "robot"
    with pytest.raises(BundleError, match="differing fields: name: bundle 'pupper_v3', robot 'other_dog'"):
        flash(tiny_bundle, DirTarget(target_dir), load_robot(folder))
    assert not target_dir.exists()


def test_cli_flashes_with_the_registry_flags_and_prints_steps(tiny_bundle, tmp_path):
    ok = subprocess.run([sys.executable, "-m", "trot.cli", "flash", str(tiny_bundle), "--target", str(tmp_path / "r"),
                         "--transport", "ros2", "--domain_id", "7", "--ros_namespace", "pupper"],
                        capture_output=True, text=True, timeout=120)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "verified" in ok.stdout and "systemctl" in ok.stdout
    unit = (tmp_path / "r" / "trot-deploy.service").read_text()
    assert "--transport ros2 --ros_namespace pupper --domain_id 7 --ros2_backend auto" in unit


def test_a_ros2_flash_installs_the_watchdog_unit_beside_the_deploy_unit(tiny_bundle, tmp_path, capsys):
    """Over ROS 2 the watchdog is its own unit (Restart=always, started by itself, above the loop's priority), on the
    same graph and profile as the deploy unit; the deploy unit wants it. Over serial there is none."""
    from trot.cli import build_parser
    from trot.deploy.flash import WATCHDOG_UNIT, run_flash

    folder = tmp_path / "r"
    argv = ["flash", str(tiny_bundle), "--target", str(folder), "--transport", "ros2", "--domain_id", "7",
            "--ros_namespace", "pupper", "--ros_topic", "imu=/imu", "--dds_loopback", "--cmd_vel_timeout_s", "0.3"]
    assert run_flash(build_parser().parse_args(argv)) == 0
    out = capsys.readouterr().out
    watchdog = (folder / WATCHDOG_UNIT).read_text()
    exec_line = next(line for line in watchdog.splitlines() if line.startswith("ExecStart="))
    assert exec_line == ("ExecStart=/usr/bin/env trot watchdog --robot pupper_v3 --ros_namespace pupper --domain_id 7 "
                         "--ros_topic imu=/imu --ros2_backend auto --dds_loopback")  # fmt: skip
    assert "Restart=always" in watchdog and "CPUSchedulingPriority=60" in watchdog
    deploy = (folder / "trot-deploy.service").read_text()
    assert f"Wants={WATCHDOG_UNIT}" in deploy and f"After={WATCHDOG_UNIT}" in deploy
    assert "CPUSchedulingPriority=50" in deploy  # the loop's, below the watchdog's
    assert f"wrote {folder.resolve() / WATCHDOG_UNIT} (trot watchdog --robot pupper_v3 --ros_namespace pupper" in out
    assert "sudo systemctl enable --now trot-watchdog trot-deploy" in out
    serial = tmp_path / "s"
    assert run_flash(build_parser().parse_args(["flash", str(tiny_bundle), "--target", str(serial)])) == 0
    assert not (serial / WATCHDOG_UNIT).exists() and "Wants=" not in (serial / "trot-deploy.service").read_text()


# ---- crash safety: SIGKILL at every step -------------------------------------------------------------


def killed_flash(kill_at, *args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(KILLED), str(kill_at), "--", "flash", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def count_steps(*args) -> int:
    out = killed_flash("count", *args)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split("steps ")[-1])


def check_every_kill_point(args, prepare, check, timeout=120) -> int:
    """Run `trot flash ARGS` killed before each step (and after the last) on a freshly prepared target;
    `check()` judges the target each time. Returns the number of kill points."""
    prepare()
    steps = count_steps(*args)
    for kill_at in range(steps + 1):
        prepare()
        out = killed_flash(kill_at, *args, timeout=timeout)
        assert out.returncode == -9, (kill_at, out.returncode, out.stderr[-500:])
        check(kill_at)
    return steps + 1


def test_flash_killed_at_every_step_leaves_old_or_new_and_rollback_works(tiny_bundle, tmp_path):
    folder, pristine = tmp_path / "robot", tmp_path / "pristine"
    a, b, c = tiny_bundle, second_bundle(tiny_bundle, tmp_path, "b"), second_bundle(tiny_bundle, tmp_path, "c")
    flash(a, DirTarget(pristine), ROBOT)
    flash(b, DirTarget(pristine), ROBOT)
    old, new = (sha256_file(b), sha256_file(a)), (sha256_file(c), sha256_file(b))
    seen = set()

    def prepare():
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(pristine, folder)

    def check(kill_at):
        now = state(folder)
        assert now in (old, new), (kill_at, now)
        seen.add(now)
        rollback(DirTarget(folder))  # works from every state a kill leaves
        assert state(folder) == (now[1], now[0])

    points = check_every_kill_point([c, "--target", folder], prepare, check)
    assert seen == {old, new} and points >= 10, (seen, points)
    print(f"flash to a folder: {points} kill points, each left the old or the new policy; rollback worked from each")


def test_rollback_killed_at_every_step_leaves_one_of_the_two_policies(tiny_bundle, tmp_path):
    folder, pristine = tmp_path / "robot", tmp_path / "pristine"
    flash(tiny_bundle, DirTarget(pristine), ROBOT)
    flash(second_bundle(tiny_bundle, tmp_path), DirTarget(pristine), ROBOT)
    before = state(pristine)

    def prepare():
        shutil.rmtree(folder, ignore_errors=True)
        shutil.copytree(pristine, folder)

    def check(kill_at):
        now = state(folder)
        assert now in (before, before[::-1]), (kill_at, now)
        rollback(DirTarget(folder))
        assert state(folder) == now[::-1]

    points = check_every_kill_point(["--rollback", "--target", folder], prepare, check)
    print(f"rollback of a folder: {points} kill points, each left one of the two policies")


def test_deploy_refuses_a_flashed_policy_whose_bytes_changed(tiny_bundle, tmp_path):
    folder = tmp_path / "robot"
    flash(tiny_bundle, DirTarget(folder), ROBOT)
    current = resolve_flashed(folder)
    data = bytearray(current.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the flashed file
    current.write_bytes(bytes(data))
    proc = subprocess.run([sys.executable, "-m", "trot.deploy.cli", "deploy", "--bundle", str(folder), "--port",
                           str(tmp_path / "tty"), "--telemetry", str(tmp_path / "t.jsonl")],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert f"{current}: sha256" in proc.stderr and "does not match its hash file" in proc.stderr
    assert not (tmp_path / "t.jsonl").exists()


class DamagingTarget(DirTarget):
    """A folder target whose copies of policy versions arrive damaged (a flaky card, a full disk)."""

    def __init__(self, root, damage: str):
        super().__init__(root)
        self.damage = damage

    def put(self, local: Path, rel: str) -> None:
        super().put(local, rel)
        if rel.endswith(".onnx"):
            data = bytearray((self.root / rel).read_bytes())
            if self.damage == "truncated":
                data = data[: len(data) // 2]
            else:
                data[len(data) // 3] ^= 0x01  # one flipped bit
            (self.root / rel).write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_a_copy_damaged_on_the_target_is_refused_and_the_good_policy_stays(tiny_bundle, tmp_path, damage):
    """The hash is taken from the copy on the target, not from the source before the copy."""
    folder = tmp_path / "robot"
    flash(tiny_bundle, DirTarget(folder), ROBOT)
    before = state(folder)
    new = second_bundle(tiny_bundle, tmp_path)
    copy = re.escape(str(folder.resolve() / "policies" / f"{sha256_file(new)}.onnx"))
    with pytest.raises(FlashError, match=rf"^{copy}: sha256 [0-9a-f]{{64}} after copy, expected {sha256_file(new)}$"):
        flash(new, DamagingTarget(folder, damage), ROBOT)
    assert state(folder) == before  # the pointer never moved to the damaged copy


def test_a_version_already_on_the_target_but_damaged_is_copied_again(tiny_bundle, tmp_path):
    folder = tmp_path / "robot"
    flash(tiny_bundle, DirTarget(folder), ROBOT)
    current = resolve_flashed(folder)
    current.write_bytes(current.read_bytes()[:-10])  # damaged in place, same name
    flash(tiny_bundle, DirTarget(folder), ROBOT)
    assert sha256_file(resolve_flashed(folder)) == sha256_file(tiny_bundle)


# ---- over ssh to 127.0.0.1 -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def local_sshd(tmp_path):
    """An OpenSSH server on 127.0.0.1 for this test only, with a throwaway key."""
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not os.path.exists(sshd) or os.geteuid() != 0:
        pytest.skip(f"sshd not available ({sshd}) or not root: the ssh path of trot flash was not exercised")
    key = tmp_path / "id"
    host_key = tmp_path / "host_key"
    for k in (key, host_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(k)], check=True)
    auth = tmp_path / "authorized_keys"
    auth.write_text((tmp_path / "id.pub").read_text())
    os.chmod(auth, 0o600)
    os.makedirs("/run/sshd", exist_ok=True)
    port = _free_port()
    config = tmp_path / "sshd_config"
    config.write_text(
        f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {host_key}\nAuthorizedKeysFile {auth}\n"
        "PasswordAuthentication no\nPermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\n"
        "Subsystem sftp /usr/lib/openssh/sftp-server\n"
        f"PidFile {tmp_path / 'sshd.pid'}\n"
    )
    # sshd logs every connection on stderr: into a file, not a pipe nobody reads (a full pipe blocks sshd, and the
    # kill-point test's 50-odd connections then hang on the 60 s ssh timeout).
    log = open(tmp_path / "sshd.log", "w")  # noqa: SIM115  (closed with the server)
    proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stderr=log, text=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if proc.poll() is not None:
            pytest.skip(f"sshd could not start on 127.0.0.1: {(tmp_path / 'sshd.log').read_text()[-500:]}")
        time.sleep(0.05)
    opts = ["-o", f"Port={port}", "-i", str(key), "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR"]  # fmt: skip
    yield opts
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


def test_flash_over_ssh_to_localhost(local_sshd, tiny_bundle, tmp_path):
    user = os.environ.get("USER") or "root"
    remote = tmp_path / "remote_robot"
    target = SshTarget(f"{user}@127.0.0.1", str(remote), local_sshd)
    b = second_bundle(tiny_bundle, tmp_path)
    flash(tiny_bundle, target, ROBOT)
    flash(b, target, ROBOT)
    assert state(remote) == (sha256_file(b), sha256_file(tiny_bundle))
    rollback(target)
    assert state(remote) == (sha256_file(tiny_bundle), sha256_file(b))
    assert (remote / "trot-deploy.service").is_file()


@pytest.mark.slow
def test_ssh_flash_and_rollback_killed_at_every_step(local_sshd, tiny_bundle, tmp_path):
    user = os.environ.get("USER") or "root"
    remote, pristine = tmp_path / "remote_robot", tmp_path / "pristine"
    a, b, c = tiny_bundle, second_bundle(tiny_bundle, tmp_path, "b"), second_bundle(tiny_bundle, tmp_path, "c")
    flash(a, DirTarget(pristine), ROBOT)
    flash(b, DirTarget(pristine), ROBOT)
    old, new = (sha256_file(b), sha256_file(a)), (sha256_file(c), sha256_file(b))
    ssh = ["--target", f"{user}@127.0.0.1", "--remote_dir", str(remote), "--ssh_options", " ".join(local_sshd)]

    def prepare():
        shutil.rmtree(remote, ignore_errors=True)
        shutil.copytree(pristine, remote)

    def check_flash(kill_at):
        now = state(remote)
        assert now in (old, new), (kill_at, now)
        rollback(DirTarget(remote))
        assert state(remote) == (now[1], now[0])

    def check_rollback(kill_at):
        now = state(remote)
        assert now in (old, old[::-1]), (kill_at, now)

    flashes = check_every_kill_point([c, *ssh], prepare, check_flash)
    rollbacks = check_every_kill_point(["--rollback", *ssh], prepare, check_rollback)
    print(f"ssh target: flash {flashes} kill points, rollback {rollbacks}, each left one complete policy")


# ---- the pieces, without a bundle ------------------------------------------------------------------------

SHA = "0123456789abcdef" * 4


def test_pointer_round_trips_and_refuses_anything_else():
    from trot.deploy.flash import Pointer, version_name

    p = Pointer(version_name(SHA), None)
    assert p.to_text() == f'{{"current": "policies/{SHA}.onnx", "previous": null}}\n'
    assert Pointer.parse(p.to_text(), "c.json") == p
    both = Pointer(version_name(SHA), version_name("f" * 64))
    assert Pointer.parse(both.to_text(), "c.json") == both
    expected = '{"current": "policies/<sha256>.onnx", "previous": "policies/<sha256>.onnx" or null}'
    for text in ('{"current": "policies/x.onnx", "previous": null}', '{"current": null, "previous": null}',
                 f'{{"current": "policies/{SHA}.onnx"}}', "[]",
                 f'{{"current": "policies/{SHA}.onnx", "previous": "../{SHA}.onnx"}}'):  # fmt: skip
        with pytest.raises(FlashError) as err:
            Pointer.parse(text, "c.json")
        assert str(err.value) == f"c.json: {text.strip()!r}; expected {expected}"
    with pytest.raises(FlashError, match=r"^c\.json: not valid JSON \("):
        Pointer.parse("{", "c.json")


def test_hash_file_checks_name_content_and_presence():
    from trot.deploy.flash import check_hash_file, hash_text

    name = f"policies/{SHA}.onnx"
    assert hash_text(SHA) == f"{SHA}  {SHA}.onnx\n"
    check_hash_file(name, hash_text(SHA), SHA, "f")
    with pytest.raises(FlashError) as err:
        check_hash_file(name, None, SHA, "f")
    assert str(err.value) == f"f: no hash file {name}.sha256: the policy was not completely flashed"
    for text, recorded in ((hash_text("f" * 64), "f" * 64), ("", "empty")):
        with pytest.raises(FlashError) as err:
            check_hash_file(name, text, SHA, "f")
        assert str(err.value) == (f"f: sha256 {SHA} does not match its hash file ({recorded}): the file changed "
                                  "after it was flashed; flash it again")  # fmt: skip
    with pytest.raises(FlashError, match="does not match its hash file"):  # content and hash agree, name does not
        check_hash_file(f"policies/{'f' * 64}.onnx", hash_text(SHA), SHA, "f")


def test_resolve_a_plain_file_checks_a_hash_file_beside_it(tmp_path):
    import hashlib

    f = tmp_path / "p.onnx"
    f.write_bytes(b"policy")
    assert resolve_flashed(f) == f  # no hash file: nothing to check
    digest = hashlib.sha256(b"policy").hexdigest()
    (tmp_path / "p.onnx.sha256").write_text(f"{digest}  p.onnx\n")
    assert resolve_flashed(f) == f and sha256_file(f) == digest
    (tmp_path / "p.onnx.sha256").write_text("")
    with pytest.raises(FlashError) as err:
        resolve_flashed(f)
    assert str(err.value) == f"{f}: sha256 {digest} does not match {tmp_path / 'p.onnx.sha256'} (empty)"
    with pytest.raises(FlashError) as err:
        resolve_flashed(tmp_path)
    assert str(err.value) == f"{tmp_path}: no {POINTER}: no policy has been flashed to this folder (`trot flash`)"
    (tmp_path / POINTER).write_text(f'{{"current": "policies/{SHA}.onnx", "previous": null}}\n')
    with pytest.raises(FlashError) as err:
        resolve_flashed(tmp_path)
    missing = tmp_path / "policies" / f"{SHA}.onnx"
    assert str(err.value) == f"{tmp_path / POINTER}: current policy {missing} does not exist"


def test_systemd_unit_runs_deploy_on_the_folder_with_realtime_priority():
    from trot.deploy.flash import systemd_unit

    unit = systemd_unit("/home/pi/trot", "pupper_v3", ["--transport", "serial", "--port", "/dev/ttyACM0"])
    assert "Description=trot deploy loop (pupper_v3, serial)\n" in unit
    assert ("ExecStart=/usr/bin/env trot deploy --bundle /home/pi/trot --robot pupper_v3 --transport serial --port "
            "/dev/ttyACM0\n") in unit  # fmt: skip
    for line in ("Restart=on-failure", "CPUSchedulingPolicy=fifo", "CPUSchedulingPriority=50", "Nice=-10",
                 "WantedBy=multi-user.target"):  # fmt: skip
        assert f"\n{line}\n" in unit
    assert "(pupper_v3, )" in systemd_unit("/x y", "pupper_v3", []) and "--bundle '/x y'" in systemd_unit(
        "/x y", "pupper_v3", [])  # fmt: skip


def test_targets_from_the_command_line():
    from trot.deploy.flash import make_target

    assert make_target("pi@pupper.local", "robot_X//").path() == "robot_X"  # trailing slashes only
    ssh = make_target("pi@pupper.local", "trot/", ["-o", "Port=2222"])
    assert isinstance(ssh, SshTarget) and ssh.name == "pi@pupper.local:trot" and ssh.opts == ["-o", "Port=2222"]
    assert ssh.path() == "trot" and ssh.path("policies") == "trot/policies" and ssh._q("a b") == "'trot/a b'"
    local = make_target("/mnt/sd card", "ignored")
    assert isinstance(local, DirTarget) and local.name == "/mnt/sd card"
    with pytest.raises(FlashError) as err:
        SshTarget("pi@host;rm", "trot")
    assert str(err.value) == "--target 'pi@host;rm': expected user@host or a folder"


# ---- the ssh target's remote commands, run by a local shell; the CLI in this process -----------------------


@pytest.fixture
def shell_ssh(monkeypatch, tmp_path):
    """`ssh HOST CMD` runs CMD in bash with HOME as its folder, `scp SRC HOST:DST` copies there; every call logged."""
    from trot.deploy import flash as flash_module

    home, calls, real_run = tmp_path / "home", [], subprocess.run
    home.mkdir()

    def run(cmd, **kwargs):
        calls.append((cmd, kwargs))
        if cmd[0] == "ssh":
            return real_run(["bash", "-c", cmd[-1]], cwd=home, capture_output=True, text=True, timeout=60)
        assert cmd[0] == "scp", cmd
        src, dst = cmd[-2], cmd[-1].split(":", 1)[1]
        shutil.copyfile(src, dst if dst.startswith("/") else home / dst)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(flash_module.subprocess, "run", run)
    return home, calls


def test_ssh_target_flashes_and_rolls_back_through_its_remote_commands(shell_ssh, tiny_bundle, tmp_path):
    home, calls = shell_ssh
    target = SshTarget("pi@pupper", "trot", ["-o", "Port=2222"])
    b = second_bundle(tiny_bundle, tmp_path)
    flash(tiny_bundle, target, ROBOT)
    flash(b, target, ROBOT)
    assert state(home / "trot") == (sha256_file(b), sha256_file(tiny_bundle))
    assert target.listdir("policies") == sorted(p.name for p in (home / "trot" / "policies").iterdir())
    assert target.exists("current.json") and not target.exists("nope")
    assert target.read_text("nope") is None and target.read_text(POINTER).startswith('{"current"')
    rollback(target)
    assert state(home / "trot") == (sha256_file(tiny_bundle), sha256_file(b))
    ssh = [c for c, _ in calls if c[0] == "ssh"]
    scp = [c for c, _ in calls if c[0] == "scp"]
    assert all(c[:4] == ["ssh", "-o", "Port=2222", "pi@pupper"] for c in ssh)
    assert all(c[:4] == ["scp", "-q", "-o", "Port=2222"] and c[-1].startswith("pi@pupper:trot/") for c in scp)
    assert ssh[0][-1] == "mkdir -p trot/policies && sync trot"
    put = next(c[-1] for c in ssh if c[-1].startswith("sync trot/policies/."))
    assert re.fullmatch(r"sync trot/policies/\.[0-9a-f]{64}\.onnx\.tmp && mv -f trot/policies/\.[0-9a-f]{64}\.onnx"
                        r"\.tmp trot/policies/[0-9a-f]{64}\.onnx && sync trot/policies", put)  # fmt: skip
    assert all(kw["capture_output"] and kw["text"] and kw["timeout"] in (60, 300) for _, kw in calls)
    target.remove(f"policies/{SHA}.onnx")  # removing what is not there is fine (rm -f)


def test_ssh_target_failures_name_the_command_and_the_error(shell_ssh, tmp_path, monkeypatch):
    from trot.deploy import flash as flash_module

    target = SshTarget("pi@pupper", "trot")
    with pytest.raises(FlashError) as err:
        target.sha256("policies/none.onnx")
    assert str(err.value).startswith("ssh pi@pupper 'sha256sum trot/policies/none.onnx' failed (1): sha256sum: ")

    def scp_fails(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, "", "lost connection")

    monkeypatch.setattr(flash_module.subprocess, "run", scp_fails)
    (tmp_path / "f").write_text("x")
    with pytest.raises(FlashError) as err:
        target.put(tmp_path / "f", "policies/a.onnx")
    assert str(err.value) == "scp to pi@pupper:trot/policies/.a.onnx.tmp failed (1): lost connection"


def test_flash_cli_in_process(tiny_bundle, tmp_path, capsys):
    from trot.cli import build_parser
    from trot.deploy.flash import run_flash

    parse = build_parser().parse_args
    folder = tmp_path / "robot"
    args = parse(["flash", str(tiny_bundle), "--target", str(folder)])
    assert (args.remote_dir, args.robot, args.rollback, args.ssh_options) == ("trot", None, False, "")
    assert run_flash(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"trot flash: checked {tiny_bundle} (integrity, contract ")
    assert out[-1] == (f"trot flash: on the robot, once: sudo cp {folder.resolve() / 'trot-deploy.service'} "
                       "/etc/systemd/system/ && sudo systemctl enable --now trot-deploy; after each flash or "
                       "rollback: sudo systemctl restart trot-deploy")  # fmt: skip
    unit = (folder / "trot-deploy.service").read_text()
    assert "--robot pupper_v3 --transport serial --port /dev/ttyACM0 --baud 1000000" in unit
    with pytest.raises(SystemExit) as err:
        run_flash(parse(["flash", "--target", str(folder)]))
    assert str(err.value) == "trot flash: a BUNDLE is needed (or --rollback)"
    with pytest.raises(SystemExit) as err:
        run_flash(parse(["flash", "--rollback", "--target", str(folder)]))
    assert str(err.value) == f"trot flash: {folder.resolve() / POINTER}: no previous policy to roll back to"
    with pytest.raises(SystemExit) as err:
        run_flash(parse(["flash", str(tiny_bundle), "--target", str(folder), "--robot", str(tmp_path / "nobot")]))
    assert str(err.value).startswith("trot flash: ")
    capsys.readouterr()
    b = second_bundle(tiny_bundle, tmp_path)
    assert run_flash(parse(["flash", str(b), "--target", str(folder), "--transport", "ros2", "--domain_id", "3"])) == 0
    assert "--transport ros2" in (folder / "trot-deploy.service").read_text()
    assert run_flash(parse(["flash", "--rollback", "--target", str(folder)])) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("trot flash: restored ")
    assert state(folder)[0] == sha256_file(tiny_bundle)


def test_flash_and_rollback_say_each_step(tiny_bundle, tmp_path):
    folder = tmp_path / "robot"
    target = DirTarget(folder)
    a, b = tiny_bundle, second_bundle(tiny_bundle, tmp_path)
    da, db = sha256_file(a), sha256_file(b)
    root = folder.resolve()
    lines = flash(a, target, ROBOT)
    assert lines == [
        f"checked {a} (integrity, contract {ROBOT.contract_sha256()[:12]} of robot 'pupper_v3')",
        f"gate: {record_path(a)}: PASS on 2026-12-08 (trot 0123456789ab, 10 s cells, latency 20 ms): judged cells "
        f"passing pybullet 4 of 4; stress (not judged) pybullet 2 of 2; for this exact file (sha256 {da[:16]}…)",
        f"copied {a.name} to {root / 'policies' / (da + '.onnx')} (sha256 {da[:16]}… verified, hash file written)",
        f"copied its gate record to {root / 'policies' / (da + '.onnx.gate.json')}",
        f"wrote {root / 'trot-deploy.service'} (trot deploy --transport serial --port /dev/ttyACM0)",
        f"switched {root / POINTER} to policies/{da}.onnx",
    ]
    assert flash(a, target, ROBOT, ["--transport", "serial", "--port", "/dev/ttyUSB0"])[4:] == [
        f"wrote {root / 'trot-deploy.service'} (trot deploy --transport serial --port /dev/ttyUSB0)",
        f"policies/{da}.onnx was already the current policy",
    ]
    switched = f"switched {root / POINTER} to policies/{db}.onnx (previous policies/{da}.onnx)"
    assert flash(b, target, ROBOT)[-1] == switched
    assert (folder / "policies" / f"{db}.onnx.sha256").read_text() == f"{db}  {db}.onnx\n"
    restored = (f"restored {root / 'policies' / (da + '.onnx')} (sha256 {da[:16]}… matches its hash file); the "
                f"rolled-back one, policies/{db}.onnx, is now the previous policy")  # fmt: skip
    assert rollback(target) == [restored]
    assert sorted(p.name for p in folder.iterdir()) == ["current.json", "policies", "trot-deploy.service"]


def test_flash_help_names_every_flag(capsys):
    from trot.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["flash", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for text in ("policy bundle (.onnx); not needed with --rollback",
                 "user@host (OpenSSH) or a folder, e.g. a mounted SD card",
                 "folder on the robot for user@host targets (default ~/trot)",
                 "robot to check against (default: the bundle's)", "put the previous policy back",
                 "extra ssh/scp options, e.g. '-o Port=2222 -i key'"):  # fmt: skip
        assert re.search(rf"(^|[ (\[]){re.escape(text)}($|[ )\],])", out), text


def test_flash_cli_to_an_ssh_target_passes_the_folder_and_options(shell_ssh, tiny_bundle, capsys):
    from trot.cli import build_parser
    from trot.deploy.flash import run_flash

    home, calls = shell_ssh
    parse = build_parser().parse_args
    args = ["--target", "pi@pupper", "--remote_dir", "robot_dir", "--ssh_options", "-o Port=2222 -i 'my key'"]
    assert run_flash(parse(["flash", str(tiny_bundle), *args])) == 0
    assert state(home / "robot_dir") == (sha256_file(tiny_bundle), None)
    assert calls and all(c[1:5] in (["-o", "Port=2222", "-i", "my key"], ["-q", "-o", "Port=2222", "-i"])
                         for c, _ in calls)  # fmt: skip
    assert capsys.readouterr().out.splitlines()[-1].startswith(
        "trot flash: on the robot, once: sudo cp robot_dir/trot-deploy.service /etc/systemd/system/")  # fmt: skip


def test_flash_needs_a_target(capsys):
    from trot.cli import build_parser

    with pytest.raises(SystemExit) as err:
        build_parser().parse_args(["flash", "policy.onnx"])
    assert err.value.code == 2 and "the following arguments are required: --target" in capsys.readouterr().err


# ---- the gate's verdict -------------------------------------------------------------------------------------


def test_a_bundle_without_a_gate_record_is_refused_before_anything_is_copied(tiny_bundle, tmp_path):
    ungated = second_bundle(tiny_bundle, tmp_path, gated=False)
    with pytest.raises(FlashError) as err:
        flash(ungated, DirTarget(tmp_path / "robot"), ROBOT)
    assert str(err.value) == (f"refused: no gate record for {ungated} (expected {record_path(ungated)}): run "
                              f"`trot gate {ungated}`. Only a policy that passed the full gate is flashed; --force "
                              "flashes it anyway and records that on the robot")  # fmt: skip
    assert not (tmp_path / "robot").exists()


def test_a_failing_record_is_refused_naming_what_failed(tiny_bundle, tmp_path, gate_record):
    failing = second_bundle(tiny_bundle, tmp_path, gated=False)
    gate_record(failing, failures=("yaw err 0.200 > 0.1 rad/s", "heading swing 12.0° > 10° per stride"))
    with pytest.raises(FlashError) as err:
        flash(failing, DirTarget(tmp_path / "robot"), ROBOT)
    assert str(err.value).startswith(f"refused: {failing} failed the gate (FAIL on 2026-12-08")
    assert ("pybullet forward_max / latency_declared: yaw err 0.200 > 0.1 rad/s; heading swing 12.0° > 10° per "
            "stride. Only a policy") in str(err.value)  # fmt: skip


def test_the_record_is_bound_to_the_exact_bytes(tiny_bundle, tmp_path):
    """Another bundle beside a passing record (the record copied with a renamed or re-exported file) is refused,
    naming both hashes; a one-byte change of a gated bundle is refused too (its integrity check names it first)."""
    other = second_bundle(tiny_bundle, tmp_path, gated=False)
    shutil.copyfile(record_path(tiny_bundle), record_path(other))
    with pytest.raises(FlashError) as err:
        flash(other, DirTarget(tmp_path / "robot"), ROBOT)
    assert str(err.value).startswith(f"refused: {record_path(other)} is the gate record of another file (sha256 "
                                     f"{sha256_file(tiny_bundle)[:16]}…, gated as tiny.onnx on 2026-12-08); {other} "
                                     f"has sha256 {sha256_file(other)[:16]}…")  # fmt: skip
    flipped = tmp_path / "flipped.onnx"
    data = bytearray(tiny_bundle.read_bytes())
    data[len(data) // 2] ^= 0x01
    flipped.write_bytes(bytes(data))
    shutil.copyfile(record_path(tiny_bundle), record_path(flipped))
    with pytest.raises(BundleError, match="changed since export"):
        flash(flipped, DirTarget(tmp_path / "robot"), ROBOT)
    assert not (tmp_path / "robot").exists()


def test_a_record_judged_at_less_latency_than_the_robot_declares_is_refused(tiny_bundle, tmp_path, gate_record):
    """A pass judged at 0 ms (a robot folder whose [latency] said 0) does not cover a Pupper declared at 20 ms."""
    fast = second_bundle(tiny_bundle, tmp_path, gated=False)
    gate_record(fast, latency_s=0.0)
    with pytest.raises(FlashError) as err:
        flash(fast, DirTarget(tmp_path / "robot"), ROBOT)
    assert str(err.value).startswith(f"refused: {record_path(fast)} judged {fast} at 0 ms of actuation latency; "
                                     "the robot is declared to meet 20 ms (robot.toml [latency]): gate it")  # fmt: skip


def test_force_flashes_and_records_on_the_target_what_it_overrode(tiny_bundle, tmp_path, gate_record):
    folder = tmp_path / "robot"
    failing = second_bundle(tiny_bundle, tmp_path, gated=False)
    gate_record(failing, failures=("yaw err 0.200 > 0.1 rad/s",))
    lines = flash(failing, DirTarget(folder), ROBOT, force=True)
    digest = sha256_file(failing)
    note = json.loads((folder / "policies" / f"{digest}.onnx.force.json").read_text())
    assert note["forced"] is True and note["bundle_sha256"] == digest and note["user"] and note["at"]
    assert note["overridden"].startswith(f"{failing} failed the gate (FAIL on 2026-12-08")
    # The failing record is this file's: it goes along, so the robot holds the verdict it was flashed against.
    assert (folder / "policies" / f"{digest}.onnx.gate.json").read_bytes() == record_path(failing).read_bytes()
    assert any(line.startswith("FORCED without a passing gate record") for line in lines)
    assert state(folder) == (digest, None)
    # Flashed again with a passing record and no --force: the record replaces the old one, the force note goes.
    gate_record(failing)
    lines = flash(failing, DirTarget(folder), ROBOT)
    assert not (folder / "policies" / f"{digest}.onnx.force.json").exists()
    assert json.loads((folder / "policies" / f"{digest}.onnx.gate.json").read_text())["passed"] is True
    assert lines[1].startswith(f"gate: {record_path(failing)}: PASS on 2026-12-08")


def test_the_gate_record_goes_along_and_side_files_are_pruned_with_their_version(tiny_bundle, tmp_path):
    folder = tmp_path / "robot"
    a, b, c = tiny_bundle, second_bundle(tiny_bundle, tmp_path, "b"), second_bundle(tiny_bundle, tmp_path, "c")
    flash(a, DirTarget(folder), ROBOT)
    da = sha256_file(a)
    assert (folder / "policies" / f"{da}.onnx.gate.json").read_bytes() == record_path(a).read_bytes()
    flash(b, DirTarget(folder), ROBOT)
    flash(c, DirTarget(folder), ROBOT)
    kept = {sha256_file(b), sha256_file(c)}
    assert sorted(p.name for p in (folder / "policies").iterdir()) == sorted(
        f"{h}.onnx{suffix}" for h in kept for suffix in ("", ".sha256", ".gate.json"))  # fmt: skip


def test_flash_cli_refuses_without_a_passing_record_and_force_overrides(tiny_bundle, tmp_path, capsys):
    from trot.cli import build_parser
    from trot.deploy.flash import run_flash

    parse = build_parser().parse_args
    ungated = second_bundle(tiny_bundle, tmp_path, gated=False)
    with pytest.raises(SystemExit) as err:
        run_flash(parse(["flash", str(ungated), "--target", str(tmp_path / "robot")]))
    assert str(err.value).startswith(f"trot flash: refused: no gate record for {ungated}")
    assert run_flash(parse(["flash", str(ungated), "--target", str(tmp_path / "robot"), "--force"])) == 0
    assert "trot flash: FORCED without a passing gate record" in capsys.readouterr().out
