"""The gate's verdict on one bundle file, bound to the file's bytes: `<bundle>.gate.json` beside it.

A full gate run (`trot gate BUNDLE`, the whole matrix) writes the record (`trot.hil.gate.record`): the sha256 of
the bundle file, the verdict, when and by which trot revision, the thresholds, engines, commands, perturbations
(which ones were judged, which were stress) and every cell's result. This module reads it, for the robot side
(`trot flash` refuses a bundle without a passing record for its exact bytes; `trot inspect` shows it), and so
imports nothing but the standard library.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

FORMAT_VERSION = 1
SUFFIX = ".gate.json"


class GateRecordError(ValueError):
    """No gate record, a record for another file, a failing one, or one that cannot be read: the message says which."""


def record_path(bundle_path: str | Path) -> Path:
    """Where a bundle's gate record lives: `walk.onnx` -> `walk.onnx.gate.json` beside it."""
    bundle_path = Path(bundle_path)
    return bundle_path.with_name(bundle_path.name + SUFFIX)


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class GateRecord:
    """One full gate run's verdict on one bundle file."""

    bundle_sha256: str  # of the bundle file's bytes when it was gated
    bundle_file: str  # its name then
    robot: str
    contract_sha256: str
    passed: bool
    created: str  # ISO 8601, UTC
    trot_revision: str  # code revision of the trot that judged it
    engines: tuple[str, ...]
    seconds: float  # per cell
    seed: int
    latency_s: float  # the actuation latency judged at (robot.toml [latency])
    latency_source: str
    thresholds: dict
    commands: dict  # name -> [[start fraction, [vx, vy, yaw rate]], ...]
    perturbations: dict  # name -> {"terms": {...}, "sensor_noise": bool, "judged": bool}
    cells: tuple[dict, ...]  # each: engine, command, perturbation, judged, passed, failures, the metrics
    ratio_failures: tuple[str, ...] = ()
    format_version: int = FORMAT_VERSION

    def counts(self, engine: str, judged: bool = True) -> tuple[int, int]:
        """(cells passed, cells run) of `engine`: the judged ones (judged=False: the stress ones)."""
        cells = [c for c in self.cells if c["engine"] == engine and bool(c["judged"]) == judged]
        return sum(bool(c["passed"]) for c in cells), len(cells)

    def failures(self) -> list[str]:
        """Why it failed: 'engine command / perturbation: reasons' per failing judged cell, then the ratio failures."""
        out = [f"{c['engine']} {c['command']} / {c['perturbation']}: {'; '.join(c['failures'])}"
               for c in self.cells if c["judged"] and not c["passed"]]  # fmt: skip
        return out + list(self.ratio_failures)

    def summary(self) -> str:
        """'PASS on 2026-12-08 (trot abc): pybullet 72 of 72 judged cells pass, mujoco 81 of 81; stress: ...'."""
        judged = ", ".join(f"{e} {p} of {n}" for e in self.engines for p, n in [self.counts(e)])
        stress = ", ".join(f"{e} {p} of {n}" for e in self.engines for p, n in [self.counts(e, False)] if n)
        verdict = "PASS" if self.passed else "FAIL"
        text = (
            f"{verdict} on {self.created[:10]} (trot {self.trot_revision}, {self.seconds:g} s cells, latency "
            f"{1e3 * self.latency_s:g} ms): judged cells passing {judged}"
        )
        if stress:
            text += f"; stress (not judged) {stress}"
        if self.ratio_failures:
            text += f"; {len(self.ratio_failures)} engine-agreement failure(s)"
        return text

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1) + "\n"

    @staticmethod
    def from_json(text: str, where: str) -> GateRecord:
        """Parse a record; GateRecordError naming the file and the field on anything else."""
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise GateRecordError(f"{where}: not a gate record: not valid JSON ({e})") from e
        if not isinstance(doc, dict):
            raise GateRecordError(f"{where}: not a gate record: expected a JSON object")
        if doc.get("format_version") != FORMAT_VERSION:
            raise GateRecordError(f"{where}: field 'format_version' = {doc.get('format_version')!r}; expected "
                                  f"{FORMAT_VERSION} (re-run `trot gate` with this trot)")  # fmt: skip
        types = {"bundle_sha256": str, "bundle_file": str, "robot": str, "contract_sha256": str, "passed": bool,
                 "created": str, "trot_revision": str, "engines": list, "seconds": (int, float), "seed": int,
                 "latency_s": (int, float), "latency_source": str, "thresholds": dict, "commands": dict,
                 "perturbations": dict, "cells": list, "ratio_failures": list}  # fmt: skip
        for name, kind in types.items():
            if name not in doc:
                raise GateRecordError(f"{where}: field '{name}' is missing")
            if not isinstance(doc[name], kind) or (kind is int and isinstance(doc[name], bool)):
                raise GateRecordError(f"{where}: field '{name}' = {doc[name]!r}; expected {_kind(kind)}")
        cell_keys = ("engine", "command", "perturbation", "judged", "passed", "failures")
        for i, cell in enumerate(doc["cells"]):
            missing = [k for k in cell_keys if not isinstance(cell, dict) or k not in cell]
            if missing:
                raise GateRecordError(f"{where}: field 'cells[{i}]' lacks {missing}")
        known = {f.name for f in fields(GateRecord)}
        doc = {k: v for k, v in doc.items() if k in known}
        doc.update(engines=tuple(doc["engines"]), cells=tuple(doc["cells"]),
                   ratio_failures=tuple(doc["ratio_failures"]))  # fmt: skip
        return GateRecord(**doc)


def _kind(kind) -> str:
    names = {str: "a string", bool: "true or false", list: "a list", dict: "an object", int: "an integer"}
    return names.get(kind, "a number")


def read_record(path: str | Path) -> GateRecord:
    """The record in `path`; GateRecordError when it is missing or unreadable."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise GateRecordError(f"{path}: no such gate record") from None
    return GateRecord.from_json(text, str(path))


def find_record(bundle_path: str | Path, digest: str | None = None) -> tuple[GateRecord | None, str]:
    """The bundle's record if there is one for these exact bytes, and a sentence saying what was found (no record,
    a record for another file, or the verdict). digest: the bundle's sha256, when already known."""
    bundle_path = Path(bundle_path)
    path = record_path(bundle_path)
    if not path.is_file():
        return None, f"no gate record for {bundle_path} (expected {path}): run `trot gate {bundle_path}`"
    record = read_record(path)
    digest = digest or file_sha256(bundle_path)
    if record.bundle_sha256 != digest:
        return None, (f"{path} is the gate record of another file (sha256 {record.bundle_sha256[:16]}…, gated as "
                      f"{record.bundle_file} on {record.created[:10]}); {bundle_path} has sha256 {digest[:16]}…: "
                      f"gate this file (`trot gate {bundle_path}`)")  # fmt: skip
    return record, f"{path}: {record.summary()}; for this exact file (sha256 {digest[:16]}…)"


def require_pass(bundle_path: str | Path, digest: str | None = None, latency_s: float | None = None) -> GateRecord:
    """The bundle's passing record; GateRecordError saying why not (no record, another file's, what failed, or,
    with `latency_s` (the robot's declared latency), a record judged at a shorter latency than that)."""
    record, found = find_record(bundle_path, digest)
    if record is None:
        raise GateRecordError(found)
    if latency_s is not None and record.latency_s < latency_s - 1e-9:
        raise GateRecordError(f"{record_path(bundle_path)} judged {bundle_path} at {1e3 * record.latency_s:g} ms of "
                              f"actuation latency; the robot is declared to meet {1e3 * latency_s:g} ms (robot.toml "
                              "[latency]): gate it again against this robot")  # fmt: skip
    if not record.passed:
        failures = record.failures()
        shown = "; ".join(failures[:5]) + (f"; and {len(failures) - 5} more" if len(failures) > 5 else "")
        raise GateRecordError(f"{bundle_path} failed the gate ({record.summary()}): {shown}")
    return record
