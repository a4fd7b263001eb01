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
    assert src.parent == path.parent and src != path and dst == path and renamed == size
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
