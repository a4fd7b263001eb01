"""Mutation testing of the robot side, the mapping, the bundle, the checkpoint, the task, randomization and
train-until-gate code: a benchmark-style command.

    python tools/mutation.py                      # every module but those run on request, one after another, 1 worker
    python tools/mutation.py safety protocol -j 2 # some modules, 2 workers
    python tools/mutation.py mapping --show       # and the diff of every surviving mutant
    python tools/mutation.py mapping --survivors  # after adding tests: only the last run's open survivors again

mutmut (3.x, the `mutation` extra) mutates one module at a time and runs only that module's fast tests (MODULES
below) against each mutant. mutmut names modules after their path, and trot's packages live in folders that
setuptools maps (`deploy/` is `trot.deploy`), so each run works in a scratch tree that lays the sources out as
`src/trot/...` (the repository is never touched); `[tool.mutmut]` in pyproject.toml holds the settings common to
every module. Prints, per module: mutants, killed (a test failed or timed out), survived, with no test, the
equivalent ones listed in docs/testing.md, the kill rate without them, and the wall time. Not part of CI.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
# trot's subpackages and the folders setuptools maps them from: "trot/deploy" -> "deploy".
PACKAGE_DIR = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
PACKAGES = {pkg.replace(".", "/"): folder for pkg, folder in PACKAGE_DIR.items()}
DOC = REPO / "docs" / "testing.md"
MUTMUT = str(Path(sys.executable).with_name("mutmut"))


# The sim tests but the pinned rewards (see "task" below) and the MuJoCo Warp copies of the physics tests.
NOT_PINNED = ("-k", "not same_seed_gives_the_rewards_pinned and not mjwarp")


@dataclass(frozen=True)
class Module:
    source: str  # repository path
    tests: tuple[str, ...]  # the fast tests that exercise it (pytest node ids or -k expressions after "-k")
    # mutmut's CPU limit per mutant is 2 x multiplier x (its tests' time + timeout_constant). The task's code runs in
    # nearly every sim test (a minute in all): pyproject's 10 would give a mutant that loops 20 minutes; at 1.5 mutants
    # that fail their tests in 20 s of CPU were cut off as timeouts (torch's and MuJoCo's threads count too).
    timeout_multiplier: float | None = None


MODULES = {
    "safety": Module("deploy/safety.py", ("tests/deploy/test_safety.py", "tests/deploy/test_safety_lines.py")),
    # The 120 000-frame fuzz runs ~2 s a mutant; the decoder's rules have direct tests besides.
    "protocol": Module("deploy/protocol.py", ("tests/deploy/test_protocol.py", "tests/deploy/test_protocol_fields.py",
                                              "-k", "not fuzz")),
    "link": Module("deploy/link.py", ("tests/deploy/test_link.py", "tests/deploy/test_safety.py")),
    "transport": Module("deploy/transport.py", (
        "tests/deploy/test_transport.py",
        "tests/deploy/test_stale_bound.py::test_a_state_is_stamped_when_its_bytes_arrive_not_when_the_loop_polls")),
    "loop": Module("deploy/loop.py", ("tests/deploy/test_loop.py",)),
    "runtime": Module("deploy/runtime.py", ("tests/deploy/test_runtime.py",)),
    "flash": Module("deploy/flash.py", ("tests/deploy/test_flash.py", "-k", "not localhost and not every_step")),
    "deploy_bundle": Module("deploy/bundle.py", ("tests/deploy/test_bundle_loading.py",)),
    "bundle": Module("trot/bundle.py", ("tests/trot/test_bundle.py",)),
    "mapping": Module("trot/mapping.py", ("tests/trot/test_mapping.py", "tests/deploy/test_runtime.py")),
    "checkpoint": Module("train/checkpoint.py", ("tests/train/test_checkpoint.py",)),
    # What a policy learns: the task and its randomization. The pinned-rewards test is left out: a re-pinning after a
    # deliberate change would let through whatever it alone caught, so the behaviour tests must catch it. MuJoCo Warp
    # on the CPU adds nothing here (the same write_params contract, tested per backend) but minutes of compiling.
    "task": Module("sim/task.py", ("tests/sim/test_task_config.py", "tests/sim/test_locomotion.py", *NOT_PINNED), 4.0),
    "locomotion": Module("sim/locomotion.py", (
        "tests/sim/test_locomotion.py", "tests/sim/test_rewards.py", "tests/sim/test_randomization.py",
        "tests/sim/test_symmetry.py",
        *NOT_PINNED), 4.0),
    "rewards": Module("sim/rewards.py", ("tests/sim/test_rewards.py", "tests/sim/test_locomotion.py", *NOT_PINNED),
                      4.0),
    "rand_terms": Module("randomization/terms.py", ("tests/sim/test_randomization.py", "tests/sim/test_task_config.py",
                                                    *NOT_PINNED), 4.0),
    "rand_params": Module("randomization/params.py", ("tests/sim/test_randomization.py", *NOT_PINNED), 4.0),
    "randomizer": Module("randomization/randomizer.py", ("tests/sim/test_randomization.py", *NOT_PINNED), 4.0),
    # What may reach a robot: train-until-gate's verdicts and its gate_passed.onnx.
    "until_gate": Module("train/until_gate.py", ("tests/train/test_until_gate.py",
                                                 "tests/train/test_until_gate_promises.py")),
    # The gate's verdict of a cell (hil/gate/judge.py). Not measured yet: mutmut's clean run fails while the shipped
    # walk.onnx does not walk (test_every_cell_passing_exits_0); run it by name once the trained policy ships.
    "gate_judge": Module("hil/gate/judge.py", ("tests/hil/test_gate.py",)),
}
# Run only when named: the loop's tests run it in real time (about 25 s a mutant, hours for the module on 2 cores);
# the gate's judge is not measured yet (above).
ON_REQUEST = {"loop", "gate_judge"}
CAUGHT = {"killed", "timeout", "segfault"}  # a test failed, hung or crashed with the mutant in


def mirror_path(source: str) -> str:
    """`deploy/safety.py` -> `src/trot/deploy/safety.py`: where the scratch tree holds a repository file."""
    top, _, rest = source.partition("/")
    package = next(pkg for pkg, folder in PACKAGES.items() if folder == top)
    return f"src/{package}/{rest}"


SKIP = shutil.ignore_patterns("__pycache__", "*.pyc")


def build_tree(root: Path, module: Module) -> None:
    """A scratch tree: the sources as src/trot/..., the tests, and a pyproject.toml with this module's settings."""
    if root.exists():
        shutil.rmtree(root)
    for package, folder in PACKAGES.items():
        shutil.copytree(REPO / folder, root / "src" / package, ignore=SKIP, dirs_exist_ok=True)
    shutil.copytree(REPO / "tests", root / "tests", ignore=SKIP)
    shutil.copytree(REPO / "docs", root / "docs", ignore=SKIP)  # tests hold the docs to the code (terms, tables)
    write_settings(root, module)


def refresh_tests(root: Path, module: Module, timeouts: bool = False) -> list[str]:
    """Reuse the last run's scratch tree with this checkout's other sources, tests, docs and settings; return the
    mutants that survived that run and are not listed as equivalent (and, with `timeouts`, those it stopped at the CPU
    limit). The module's source must be the one that run mutated (mutants are numbered in it)."""
    copied = root / mirror_path(module.source)
    if not copied.is_file() or not (root / "mutants").is_dir():
        raise SystemExit(f"mutation: no earlier run of {module.source} in {root}: run it whole first")
    if copied.read_bytes() != (REPO / module.source).read_bytes():
        raise SystemExit(f"mutation: {module.source} changed since the run in {root}: its mutants differ, run it whole")
    # The other sources, the tests and the docs as they are now (mutmut copies each unmutated source and tests/ into
    # mutants/ at each run); the mutated module stays as it was, untouched, so that its mutants are reused.
    keep = Path(mirror_path(module.source))
    for package, folder in PACKAGES.items():
        for path in (REPO / folder).rglob("*"):
            target = root / "src" / package / path.relative_to(REPO / folder)
            if path.is_file() and "__pycache__" not in path.parts and target != root / keep:
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
    for folder in ("tests", "docs"):
        shutil.rmtree(root / folder)
        shutil.copytree(REPO / folder, root / folder, ignore=SKIP)
    write_settings(root, module)
    known = equivalents()
    again = {"timeout"} if timeouts else set()
    return sorted(k for k, s in statuses(root).items() if (s not in CAUGHT and k not in known) or s in again)


def write_settings(root: Path, module: Module) -> None:
    """The scratch tree's pyproject.toml: the common mutmut settings, this module and its tests."""
    tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]
    # Test files this checkout lacks are left out (an older revision measured with the same command).
    tests = [t for t in module.tests if not t.startswith("tests/") or (REPO / t.split("::")[0]).exists()]
    if not any(t.startswith("tests/") for t in tests):
        raise FileNotFoundError(f"none of {module.tests} in this checkout")
    settings = dict(tool["mutmut"], only_mutate=[mirror_path(module.source)], pytest_add_cli_args_test_selection=tests,
                    also_copy=["docs/"])  # fmt: skip
    if module.timeout_multiplier is not None:
        settings["timeout_multiplier"] = module.timeout_multiplier
    markers = json.dumps(tool["pytest"]["ini_options"]["markers"])
    lines = ["[tool.mutmut]", *(f"{k} = {json.dumps(v)}" for k, v in settings.items()), "",
             "[tool.pytest.ini_options]", f"markers = {markers}"]  # fmt: skip
    (root / "pyproject.toml").write_text("\n".join(lines) + "\n")


def make_tiny(folder: Path) -> None:
    """One tiny checkpoint and bundle for every module's tests (the suite's session fixture, made once a run: one
    left by an earlier run may be of an older bundle format or training code)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    logs = folder / "logs"
    subprocess.run([sys.executable, "-m", "trot.cli", "train", "--max_iterations", "1", "--num_envs", "8",
                    "--log_root", str(logs), "--set", "runner.num_steps_per_env=8"], check=True,
                   capture_output=True, timeout=600)  # fmt: skip
    (ckpt,) = logs.glob("pupper_v3/walk/*/model_0.pt")
    shutil.copy(ckpt, folder / "model_0.pt")
    from trot.train.export import export_bundle

    export_bundle(folder / "model_0.pt", folder / "tiny.onnx")


def equivalents() -> dict[str, str]:
    """Mutant name -> why it cannot change behaviour, from docs/testing.md's table of equivalent mutants."""
    rows = re.findall(r"^\| `(trot\.[\w.ǁ]+__mutmut_\d+)` \| (.+?) \|$", DOC.read_text(), re.MULTILINE)
    return dict(rows)


def statuses(root: Path) -> dict[str, str]:
    """Mutant name -> mutmut's status, from the run's .meta files."""
    from mutmut.stats import status_by_exit_code

    out = {}
    for meta in (root / "mutants").rglob("*.py.meta"):
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            out[name] = status_by_exit_code[code]
    return out


def run_module(
    name: str, module: Module, work: Path, workers: int, tiny: Path, show: bool, survivors: bool = False,
    timeouts: bool = False,
) -> dict:
    """Mutate one module and run its tests against every mutant (or, with `survivors`, against the last run's open
    survivors only, with the tests as they are now); the figures of the run."""
    root = work / name
    again: list[str] = []
    try:
        if survivors:
            again = refresh_tests(root, module, timeouts)
            if not again:
                print(f"  {name}: no open survivor to run again")
        else:
            build_tree(root, module)
    except FileNotFoundError as e:
        print(f"  {name}: not run: {e}")
        return {"module": name, "mutants": 0, "caught": 0, "equivalent": 0, "open": [], "wall_s": 0.0, "rate": 0.0}
    # Exists before Python starts: a PYTHONPATH folder missing at start-up is cached as absent for the whole run.
    (root / "mutants" / "src").mkdir(parents=True, exist_ok=survivors)
    # PYTHONPATH: the subprocesses a test starts import the mutants too.
    env = dict(os.environ, TROT_TEST_TINY_DIR=str(tiny), MUJOCO_GL="osmesa", PYTHONPATH=str(root / "mutants" / "src"))
    start = time.monotonic()
    if survivors and not again:
        out = subprocess.CompletedProcess([], 0, "", "")
    else:
        out = subprocess.run([MUTMUT, "run", "--max-children", str(workers), *again], cwd=root, env=env,
                             capture_output=True, text=True)  # fmt: skip
    wall = time.monotonic() - start
    (root / ("mutmut-survivors.log" if survivors else "mutmut.log")).write_text(out.stdout + out.stderr)
    if out.returncode != 0:
        raise SystemExit(f"mutation: mutmut failed on {name} (see {root / 'mutmut.log'}):\n{out.stderr[-3000:]}")
    result = statuses(root)
    known = equivalents()
    survived = sorted(k for k, s in result.items() if s not in CAUGHT)
    equivalent = [k for k in survived if k in known]
    caught = sum(s in CAUGHT for s in result.values())
    judged = len(result) - len(equivalent)
    figures = {"module": name, "mutants": len(result), "caught": caught, "equivalent": len(equivalent),
               "open": [k for k in survived if k not in known], "wall_s": wall,
               "rate": 100.0 * caught / judged if judged else 100.0}  # fmt: skip
    # A listed mutant that no longer survives (or no longer exists: the code moved) is a stale row of the table.
    prefix = mirror_path(module.source).removeprefix("src/").removesuffix(".py").replace("/", ".") + "."
    for k in sorted(k for k in known if k.startswith(prefix) and result.get(k) in CAUGHT | {None}):
        print(f"  {name}: listed as equivalent but {result.get(k) or 'not a mutant any more'}: {k}")
    diffs = mutant_diffs(root / "mutants" / mirror_path(module.source)) if show else {}
    for k in figures["open"]:
        print(f"  {name}: {result[k]}: {k}")
        if show:
            print("    " + diffs.get(k.rpartition(".")[2], "(no diff)").replace("\n", "\n    "))
    return figures


def mutant_diffs(mutated: Path) -> dict[str, str]:
    """Mangled mutant name -> the lines it changes, read from mutmut's mutated module (faster than `mutmut show`)."""
    tree = ast.parse(source := mutated.read_text())
    functions = {n.name: ast.get_source_segment(source, n).splitlines() for n in ast.walk(tree)
                 if isinstance(n, ast.FunctionDef) and "__mutmut_" in n.name}  # fmt: skip
    out = {}
    for fn, lines in functions.items():
        base, _, number = fn.rpartition("__mutmut_")
        if number.isdigit() and f"{base}__mutmut_orig" in functions:
            orig = functions[f"{base}__mutmut_orig"]
            changed = [ln for ln in difflib.unified_diff(orig[1:], lines[1:], lineterm="", n=0)
                       if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]  # fmt: skip
            out[fn] = "\n".join(changed)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("modules", nargs="*", metavar="MODULE",
                   help=f"some of {', '.join(MODULES)} (default: all but {', '.join(sorted(ON_REQUEST))})")  # fmt: skip
    p.add_argument("-j", "--workers", type=int, default=1, help="mutants tested at once (default 1; 2 cores here)")
    p.add_argument("--workdir", default="/tmp/trot-mutation", help="scratch folder (default /tmp/trot-mutation)")
    p.add_argument("--show", action="store_true", help="print the diff of every surviving mutant")
    p.add_argument("--survivors", action="store_true",
                   help="reuse each module's last scratch tree with the tests as they are now and run only its open "
                   "survivors again (after adding tests; the module's source must be unchanged)")  # fmt: skip
    p.add_argument("--timeouts", action="store_true",
                   help="with --survivors: also the mutants the last run stopped at its CPU limit (after raising it)")
    args = p.parse_args(argv)
    unknown = sorted(set(args.modules) - set(MODULES))
    if unknown:
        p.error(f"unknown modules {unknown}; expected some of {', '.join(MODULES)}")
    work = Path(args.workdir)
    tiny = work / "tiny"
    if not (args.survivors and (tiny / "tiny.onnx").is_file()):  # the survivors run again against the same one
        make_tiny(tiny)
    rows = []
    for name in args.modules or [m for m in MODULES if m not in ON_REQUEST]:
        figures = run_module(name, MODULES[name], work, args.workers, tiny, args.show, args.survivors, args.timeouts)
        rows.append(figures)
        print(f"{name:<14} {figures['mutants']:>5} mutants  {figures['caught']:>5} caught  "
              f"{figures['equivalent']:>3} equivalent  {len(figures['open']):>4} open  "
              f"kill rate {figures['rate']:5.1f} %  {figures['wall_s']:6.0f} s", flush=True)  # fmt: skip
    total = {k: sum(r[k] for r in rows) for k in ("mutants", "caught", "equivalent", "wall_s")}
    judged = total["mutants"] - total["equivalent"]
    rate = 100.0 * total["caught"] / max(judged, 1)
    print(f"{'all':<14} {total['mutants']:>5} mutants  {total['caught']:>5} caught  {total['equivalent']:>3} "
          f"equivalent  kill rate {rate:5.1f} %  {total['wall_s']:6.0f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
