"""Writing the gate record (`trot.gate_record`): a full run's verdict, bound to the bundle file's sha256.

`write_records(run, report_dir)` writes it beside the bundle (`walk.onnx.gate.json`, where `trot flash` looks)
and into the report folder, each atomically. Only a full run (`GateRun.full`: the whole matrix, 10 s cells or
longer) has a verdict to record; the quick gate and subsets write none.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from trot.gate_record import GateRecord, file_sha256, record_path
from trot.hil.gate.perturbations import STRESS
from trot.hil.gate.run import GateRun
from trot.revision import code_revision


def make_record(run: GateRun) -> GateRecord:
    """The record of a run: what it judged, how, and every cell's result."""
    bundle = run.bundle
    return GateRecord(
        bundle_sha256=run.bundle_sha256,
        bundle_file=bundle.path.name,
        robot=run.robot.name,
        contract_sha256=bundle.contract.sha256(),
        passed=run.passed,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        trot_revision=code_revision(),
        engines=tuple(run.engines),
        seconds=run.seconds,
        seed=run.seed,
        latency_s=run.robot.actuation_latency_s,
        latency_source=run.robot.actuation_latency_source,
        thresholds=asdict(run.thresholds),
        commands={c: [[f, list(v)] for f, v in segments] for c, segments in run.commands.items()},
        perturbations={
            n: {"terms": dict(p.terms), "sensor_noise": p.sensor_noise, "judged": n not in STRESS}
            for n, p in run.perturbations.items()
        },  # fmt: skip
        cells=tuple(c.metrics() for c in run.cells),
        ratio_failures=tuple(run.ratio_failures()),
    )


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, fsync, rename over it: a reader sees the old record or the new."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_records(run: GateRun, report_dir: Path | None = None) -> list[Path]:
    """The record beside the bundle and, with `report_dir`, in it; nothing for a run that is not full."""
    if not run.full:
        return []
    now = file_sha256(run.bundle.path)
    if now != run.bundle_sha256:
        raise RuntimeError(f"{run.bundle.path} changed while the gate ran (sha256 {run.bundle_sha256[:16]}… when it "
                           f"started, {now[:16]}… now): no gate record written; gate it again")  # fmt: skip
    text = make_record(run).to_json()
    paths = [record_path(run.bundle.path)]
    if report_dir is not None:
        paths.append(Path(report_dir) / record_path(run.bundle.path).name)
    for path in paths:
        atomic_write_text(path, text)
    return paths
