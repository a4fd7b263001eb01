"""Checkpoints: written atomically, refused clearly when corrupt or for another robot.

A checkpoint is rsl-rl's own dict (model, optimizer, normalizer inside the model, iteration) plus a
`trot` entry: robot name and contract hash, the resolved config, the code revision, and RNG state.
It is written to a temporary file in the same folder, fsynced and renamed, so a process killed at
any moment leaves either the previous file set or the new one, never a torn file.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import torch

from trot.revision import code_revision  # noqa: F401  (re-exported: train's callers import it from here)
from trot.robots import MODEL_NOTICES, model_differences

CHECKPOINT_RE = re.compile(r"^model_(\d+)\.pt$")


class CheckpointError(ValueError):
    """A checkpoint that can't be used, with the file and the reason."""


def _atomic_write(path: Path, mode: str, write) -> None:
    """`write(file)` into a temporary file beside `path`, flush and fsync it, rename it over `path`, fsync the
    folder: a crash at any point leaves the old file or the new one. A failed write removes the temporary."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_torch_save(obj, path: str | Path) -> None:
    """`torch.save` to `path`, atomically."""
    _atomic_write(Path(path), "wb", lambda f: torch.save(obj, f))


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path`, atomically."""
    _atomic_write(Path(path), "w", lambda f: f.write(text))


def load_checkpoint(path: str | Path, robot=None) -> dict:
    """Load a trot checkpoint; refuse a corrupt file or one trained for another robot contract."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict) or "trot" not in ckpt or "actor_state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not a trot checkpoint (missing 'trot' or 'actor_state_dict')")
    if robot is not None:
        meta = ckpt["trot"]["robot"]
        if meta["contract_sha256"] != robot.contract_sha256():
            model, body = ckpt["trot"].get("robot_model"), ""
            if meta["name"] == robot.name:  # another robot's run: its name says enough
                if model is None:
                    body = ("; the run records no robot model (it predates trot's model digests), so it cannot say "
                            "which body it was trained on")  # fmt: skip
                elif model != robot.model:
                    body = "; the robot model differs: " + "; ".join(model_differences(model, robot.model))
                if model != robot.model and robot.name in MODEL_NOTICES:
                    body += f". {MODEL_NOTICES[robot.name]}"
            raise CheckpointError(
                f"{path}: trained for robot '{meta['name']}' with contract {meta['contract_sha256'][:12]}, "
                f"but the robot here is '{robot.name}' with contract {robot.contract_sha256()[:12]}{body}"
            )
    return ckpt


def find_checkpoint(run_dir: Path, checkpoint: str | None = None) -> Path:
    """`model_<N>.pt` in run_dir: the given one (a number or a file name), or the highest N."""
    if checkpoint:
        p = Path(checkpoint)
        for candidate in (p, run_dir / p, run_dir / f"model_{checkpoint}.pt"):
            if candidate.is_file():
                return candidate
        raise CheckpointError(f"{run_dir}: no checkpoint '{checkpoint}'")
    found = [(int(m.group(1)), p) for p in run_dir.glob("model_*.pt") if (m := CHECKPOINT_RE.match(p.name))]
    if not found:
        raise CheckpointError(f"{run_dir}: no model_<N>.pt checkpoint in this run folder")
    return max(found)[1]


def find_run(log_root: Path, load_run: str | None) -> Path:
    """A run folder under log_root: by name, by path, or the most recent one."""
    if load_run:
        for candidate in (Path(load_run), log_root / load_run):
            if candidate.is_dir():
                return candidate
        raise CheckpointError(f"no run '{load_run}' in {log_root}")
    runs = sorted(p for p in log_root.iterdir() if p.is_dir()) if log_root.is_dir() else []
    if not runs:
        raise CheckpointError(f"no runs in {log_root} to resume")
    return runs[-1]
