"""`trot flash`: copy with hash check, keep and roll back the previous policy, refuse a wrong robot."""

import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from trot.deploy.bundle import BundleError
from trot.deploy.flash import DirTarget, FlashError, SshTarget, flash, rollback, sha256_file
from trot.robots import load_robot

ROBOT = load_robot("pupper_v3")


def second_bundle(tiny_bundle, tmp_path):
    """Same policy, one different metadata byte: a different file with the same contract."""
    import onnx

    model = onnx.load(str(tiny_bundle))
    model.doc_string += " (second)"
    out = tmp_path / "second.onnx"
    onnx.save(model, str(out))
    return out


def test_flash_to_folder_copies_verifies_and_writes_the_unit(tiny_bundle, tmp_path):
    target = DirTarget(tmp_path / "robot")
    lines = flash(tiny_bundle, target, ROBOT, transport="serial", port="/dev/ttyAMA0")
    assert sha256_file(tmp_path / "robot" / "policy.onnx") == sha256_file(tiny_bundle)
    assert (tmp_path / "robot" / "policy.onnx.sha256").read_text().split()[0] == sha256_file(tiny_bundle)
    unit = (tmp_path / "robot" / "trot-deploy.service").read_text()
    assert "trot deploy --bundle" in unit and "--transport serial --port /dev/ttyAMA0" in unit
    assert "Restart=on-failure" in unit and "CPUSchedulingPolicy=fifo" in unit
    assert any("verified" in line for line in lines)


def test_reflash_keeps_the_previous_policy_and_rollback_restores_it(tiny_bundle, tmp_path):
    target = DirTarget(tmp_path / "robot")
    newer = second_bundle(tiny_bundle, tmp_path)
    flash(tiny_bundle, target, ROBOT)
    flash(newer, target, ROBOT)
    assert sha256_file(tmp_path / "robot" / "policy.onnx") == sha256_file(newer)
    assert sha256_file(tmp_path / "robot" / "policy.previous.onnx") == sha256_file(tiny_bundle)
    rollback(target)
    assert sha256_file(tmp_path / "robot" / "policy.onnx") == sha256_file(tiny_bundle)
    assert sha256_file(tmp_path / "robot" / "policy.previous.onnx") == sha256_file(newer)


def test_rollback_without_a_previous_policy_is_refused(tiny_bundle, tmp_path):
    target = DirTarget(tmp_path / "robot")
    flash(tiny_bundle, target, ROBOT)
    with pytest.raises(FlashError, match="no previous policy"):
        rollback(target)


def test_bundle_for_another_robot_is_refused_before_anything_is_copied(tiny_bundle, tmp_path):
    folder = tmp_path / "other_robot"
    shutil.copytree(ROBOT.folder, folder, ignore=shutil.ignore_patterns("policies"))
    toml = folder / "robot.toml"
    toml.write_text(toml.read_text().replace('name = "pupper_v3"', 'name = "other_dog"'))
    target_dir = tmp_path / "robot"
    with pytest.raises(BundleError, match="differing fields: name: bundle 'pupper_v3', robot 'other_dog'"):
        flash(tiny_bundle, DirTarget(target_dir), load_robot(folder))
    assert not target_dir.exists()


def test_cli_refuses_wrong_robot_and_prints_steps(tiny_bundle, tmp_path):
    ok = subprocess.run([sys.executable, "-m", "trot.cli", "flash", str(tiny_bundle), "--target", str(tmp_path / "r")],
                        capture_output=True, text=True, timeout=120)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "verified" in ok.stdout and "systemctl" in ok.stdout


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
    proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if proc.poll() is not None:
            pytest.skip(f"sshd could not start on 127.0.0.1: {proc.stderr.read()[-500:]}")
        time.sleep(0.05)
    opts = ["-o", f"Port={port}", "-i", str(key), "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR"]  # fmt: skip
    yield opts
    proc.terminate()
    proc.wait(timeout=10)


def test_flash_over_ssh_to_localhost(local_sshd, tiny_bundle, tmp_path):
    user = os.environ.get("USER") or "root"
    remote = tmp_path / "remote_robot"
    target = SshTarget(f"{user}@127.0.0.1", str(remote), local_sshd)
    flash(tiny_bundle, target, ROBOT)
    flash(second_bundle(tiny_bundle, tmp_path), target, ROBOT)
    assert sha256_file(remote / "policy.previous.onnx") == sha256_file(tiny_bundle)
    rollback(target)
    assert sha256_file(remote / "policy.onnx") == sha256_file(tiny_bundle)
    assert (remote / "trot-deploy.service").is_file()
