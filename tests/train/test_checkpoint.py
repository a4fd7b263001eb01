"""The write order of the atomic checkpoint and text writes: data flushed and fsync'd in a temporary file,
then renamed over the target, then the folder fsync'd (a power cut at any point leaves the old or the new file)."""

import os
import stat
from pathlib import Path

import pytest
import torch

from trot.train import checkpoint
from trot.train.checkpoint import atomic_torch_save, atomic_write_text


@pytest.fixture
def calls(monkeypatch):
    """Every os.fsync and os.replace, in order: ("fsync", "file" or "dir", bytes on disk) / ("replace", src, dst)."""
    log = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        st = os.fstat(fd)
        log.append(("fsync", "dir" if stat.S_ISDIR(st.st_mode) else "file", st.st_size))
        return real_fsync(fd)

    def replace(src, dst):
        log.append(("replace", Path(src), Path(dst), os.stat(src).st_size))
        return real_replace(src, dst)

    monkeypatch.setattr(checkpoint.os, "fsync", fsync)
    monkeypatch.setattr(checkpoint.os, "replace", replace)
    return log


def check_order(log, path: Path) -> None:
    size = path.stat().st_size
    assert [c[0] for c in log] == ["fsync", "replace", "fsync"], log
    (_, kind, synced), (_, src, dst, renamed), (_, dir_kind, _) = log
    assert kind == "file" and synced == size, "the data must be flushed before the file is fsync'd"
    assert src.parent == path.parent and dst == path and renamed == size
    assert src.name.startswith(f".{path.name}.") and src.name.endswith(".tmp"), "a hidden temporary beside it"
    assert dir_kind == "dir", "the folder must be fsync'd after the rename"
    assert [p.name for p in path.parent.iterdir()] == [path.name], "no temporary file left"


def test_checkpoint_is_flushed_and_fsynced_before_the_rename_and_the_folder_after(tmp_path, calls):
    path = tmp_path / "model_3.pt"
    atomic_torch_save({"x": torch.arange(10)}, path)  # small: all of it sits in the file buffer until flushed
    check_order(calls, path)
    assert torch.equal(torch.load(path)["x"], torch.arange(10))


def test_text_is_flushed_and_fsynced_before_the_rename_and_the_folder_after(tmp_path, calls):
    path = tmp_path / "config.json"
    atomic_write_text(path, '{"a": 1}\n')
    check_order(calls, path)
    assert path.read_text() == '{"a": 1}\n' and oct(path.stat().st_mode & 0o777) == "0o644"


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    atomic_write_text(path, "old\n")

    def broken(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(checkpoint.os, "fsync", broken)
    for write in (lambda: atomic_write_text(path, "new\n"), lambda: atomic_torch_save({"x": 1}, path)):
        with pytest.raises(OSError, match="Input/output error"):
            write()
        assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_load_checkpoint_refuses_what_is_not_a_trot_checkpoint(tmp_path):
    from trot.train.checkpoint import CheckpointError, load_checkpoint

    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "junk.pt")
    assert str(err.value).startswith(f"{tmp_path / 'junk.pt'}: not a readable checkpoint (UnpicklingError: ")

    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "model_1.pt")
    assert str(err.value) == f"{tmp_path / 'model_1.pt'}: no such checkpoint file"
    for name, obj in (("list.pt", [1, 2]), ("rsl.pt", {"actor_state_dict": {}}), ("nomodel.pt", {"trot": {}})):
        atomic_torch_save(obj, tmp_path / name)
        with pytest.raises(CheckpointError) as err:
            load_checkpoint(tmp_path / name)
        assert str(err.value) == f"{tmp_path / name}: not a trot checkpoint (missing 'trot' or 'actor_state_dict')"


def test_load_checkpoint_checks_the_robot_contract(tmp_path):
    import random

    import numpy as np

    from trot.robots import load_robot
    from trot.train.checkpoint import CheckpointError, load_checkpoint

    robot = load_robot("pupper_v3")
    # What TrotRunner.save stores besides tensors: numpy's and Python's RNG states (not loadable as weights only).
    rng = {"numpy": np.random.get_state(), "python": random.getstate()}  # noqa: NPY002
    ok = {"actor_state_dict": {}, "trot": {"robot": {"name": "pupper_v3", "contract_sha256": robot.contract_sha256()},
                                           "rng": rng}}  # fmt: skip
    atomic_torch_save(ok, tmp_path / "ok.pt")
    loaded = load_checkpoint(tmp_path / "ok.pt", robot)["trot"]
    assert loaded["robot"] == ok["trot"]["robot"] and loaded["rng"]["python"] == rng["python"]
    other = {"actor_state_dict": {}, "trot": {"robot": {"name": "go2", "contract_sha256": "ab" * 32}}}
    atomic_torch_save(other, tmp_path / "other.pt")
    assert load_checkpoint(tmp_path / "other.pt")["trot"]["robot"]["name"] == "go2"  # no robot: not checked
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "other.pt", robot)
    assert str(err.value) == (f"{tmp_path / 'other.pt'}: trained for robot 'go2' with contract abababababab, but the "
                              f"robot here is 'pupper_v3' with contract {robot.contract_sha256()[:12]}")  # fmt: skip


def test_find_checkpoint_by_number_name_path_or_the_highest(tmp_path, monkeypatch):
    from trot.train.checkpoint import CheckpointError, find_checkpoint

    with pytest.raises(CheckpointError, match=r"no model_<N>\.pt checkpoint in this run folder$"):
        find_checkpoint(tmp_path)
    for n in (2, 10, 9):
        (tmp_path / f"model_{n}.pt").write_bytes(b"")
    (tmp_path / "model_x.pt").write_bytes(b"")
    (tmp_path / "model_99.pt.tmp").write_bytes(b"")
    assert find_checkpoint(tmp_path) == tmp_path / "model_10.pt"  # by number, not by name order
    assert find_checkpoint(tmp_path, "2") == tmp_path / "model_2.pt"
    assert find_checkpoint(tmp_path, "model_9.pt") == tmp_path / "model_9.pt"
    assert find_checkpoint(tmp_path, str(tmp_path / "model_9.pt")) == tmp_path / "model_9.pt"
    with pytest.raises(CheckpointError) as err:
        find_checkpoint(tmp_path, "7")
    assert str(err.value) == f"{tmp_path}: no checkpoint '7'"


def test_find_run_by_name_path_or_the_latest(tmp_path):
    from trot.train.checkpoint import CheckpointError, find_run

    with pytest.raises(CheckpointError) as err:
        find_run(tmp_path / "none", None)
    assert str(err.value) == f"no runs in {tmp_path / 'none'} to resume"
    with pytest.raises(CheckpointError, match=r"^no runs in .* to resume$"):
        find_run(tmp_path, None)
    for name in ("2026-01-02_10-00-00", "2026-01-10_09-00-00", "2026-01-03_00-00-00"):
        (tmp_path / name).mkdir()
    (tmp_path / "zz_notes.txt").write_text("")
    assert find_run(tmp_path, None) == tmp_path / "2026-01-10_09-00-00"
    assert find_run(tmp_path, "2026-01-02_10-00-00") == tmp_path / "2026-01-02_10-00-00"
    assert find_run(tmp_path, str(tmp_path / "2026-01-03_00-00-00")) == tmp_path / "2026-01-03_00-00-00"
    with pytest.raises(CheckpointError) as err:
        find_run(tmp_path, "nope")
    assert str(err.value) == f"no run 'nope' in {tmp_path}"


def test_code_revision_is_the_short_commit_with_a_dirty_mark_or_unknown(monkeypatch):
    import re
    import subprocess

    from trot import revision
    from trot.train.checkpoint import code_revision  # trot.revision's, re-exported

    assert re.fullmatch(r"[0-9a-f]{12}(-dirty)?|unknown", code_revision())

    calls = []

    def fake(outputs):
        def run(cmd, **kwargs):
            calls.append((cmd, kwargs))
            return subprocess.CompletedProcess(cmd, 0, stdout=outputs.pop(0), stderr="")

        return run

    monkeypatch.setattr(revision.subprocess, "run", fake(["0123456789ab\n", ""]))
    assert code_revision() == "0123456789ab"
    (rev, rev_kw), (status, status_kw) = calls
    root = rev[2]
    assert (Path(root) / "train" / "checkpoint.py").is_file(), "git runs in the trot source tree"
    assert rev == ["git", "-C", root, "rev-parse", "--short=12", "HEAD"]
    assert status == ["git", "-C", root, "status", "--porcelain", "--untracked-files=no"]
    assert rev_kw == status_kw == {"capture_output": True, "text": True, "timeout": 5}
    monkeypatch.setattr(revision.subprocess, "run", fake(["0123456789ab\n", " M train/runner.py\n"]))
    assert code_revision() == "0123456789ab-dirty"
    monkeypatch.setattr(revision.subprocess, "run", fake(["", ""]))
    assert code_revision() == "unknown"

    def missing(cmd, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(revision.subprocess, "run", missing)
    assert code_revision() == "unknown"
