"""The README's two commands and the documentation's links and command lines stay true.

- the `<!-- main-command -->` and `<!-- test-command -->` markers each sit above one bash block, and `.ci/run` runs
  exactly the test-command block (checked by running `.ci/run` with `bash -c` caught);
- every relative link in README.md, docs/*.md, deploy/*.md and robots/*/README.md leads to a file, and a `#anchor`
  to a heading of that file (GitHub's heading ids);
- every `trot <command> --flag` written in those pages names a real subcommand and its real flags;
- docs/README.md (the index) links every page; the README stays a front page (at most 150 lines).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 150
MARKERS = ("<!-- main-command -->", "<!-- test-command -->")


def pages(root: Path = ROOT) -> list[Path]:
    """The documentation pages whose links and command lines are checked."""
    found = [root / "README.md", *sorted((root / "docs").glob("*.md")), *sorted((root / "deploy").glob("*.md"))]
    return found + sorted((root / "robots").glob("*/README.md"))


# --- reading markdown -----------------------------------------------------------------------------------------------

FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def prose_lines(text: str, blank_code: bool = True) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks, inline code spans blanked unless asked (links there are not
    links)."""
    out, fenced = [], False
    for n, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append((n, CODE_SPAN.sub(lambda m: " " * len(m.group(0)), line) if blank_code else line))
    return out


def slug(heading: str) -> str:
    """GitHub's id for a heading: inline markup dropped, lower case, punctuation removed, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = text.replace("`", "").lower()
    return "".join(ch for ch in text if ch.isalnum() or ch in "-_ ").replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The ids GitHub gives the headings of a markdown file (repeats get -1, -2, ...)."""
    seen: dict[str, int] = {}
    ids = set()
    for _, line in prose_lines(path.read_text(), blank_code=False):
        m = HEADING.match(line)
        if not m:
            continue
        base = slug(m.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        ids.add(base if count == 0 else f"{base}-{count}")
    return ids


def broken_links(page: Path, root: Path = ROOT) -> list[str]:
    """Each relative link of `page` that leads to no file, out of the repository, or to no heading of its target."""
    problems = []
    for n, line in prose_lines(page.read_text()):
        for target in LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
                continue
            path_part, _, anchor = target.partition("#")
            dest = (page.parent / path_part).resolve() if path_part else page
            where = f"{page.relative_to(root)}:{n}: link ({target})"
            if not dest.is_relative_to(root.resolve()):
                problems.append(f"{where} leaves the repository")
            elif not dest.exists():
                problems.append(f"{where}: no file {dest.relative_to(root.resolve())}")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                problems.append(f"{where}: no heading with id '{anchor}' in {dest.relative_to(root.resolve())}")
    return problems


# --- the README's commands ------------------------------------------------------------------------------------------


def block_after(text: str, marker: str) -> str:
    """The bash block that the marker stands above: the marker, blank lines, ```bash, its lines, ```."""
    lines = text.splitlines()
    at = [i for i, line in enumerate(lines) if line.strip() == marker]
    assert len(at) == 1, f"README.md: {marker} appears {len(at)} times; expected once"
    i = at[0] + 1
    while i < len(lines) and not lines[i].strip():
        i += 1
    found = lines[i] if i < len(lines) else "the end of the file"
    assert found.strip() == "```bash", (
        f"README.md:{i + 1}: expected a ```bash block right after {marker}, found {found!r}"
    )
    end = next((j for j in range(i + 1, len(lines)) if lines[j].strip().startswith("```")), None)
    assert end is not None, f"README.md:{i + 1}: the bash block after {marker} is never closed"
    body = "\n".join(lines[i + 1 : end]).strip()
    assert body, f"README.md:{i + 1}: the bash block after {marker} is empty"
    return body


def run_ci_script(repo: Path, tmp_path: Path) -> tuple[subprocess.CompletedProcess, str | None]:
    """Run `repo/.ci/run` with the `bash -c` it ends in caught: returns the process and the command it would run."""
    fake = tmp_path / "fakebin"
    fake.mkdir(exist_ok=True)
    caught = tmp_path / "caught.txt"
    caught.unlink(missing_ok=True)
    shim = fake / "bash"
    shim.write_text(f'#!/bin/sh\nprintf "%s" "$2" > "{caught}"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    env = {**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(
        [shutil.which("bash", path="/bin:/usr/bin") or "/bin/bash", str(repo / ".ci" / "run")],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return proc, caught.read_text() if caught.exists() else None


def test_each_marker_stands_above_one_bash_block():
    text = (ROOT / "README.md").read_text()
    main, tests = (block_after(text, m) for m in MARKERS)
    assert "./examples/pupper_pipeline.sh" in main, main
    assert "pytest" in tests and "ruff check ." in tests, tests
    assert (ROOT / "examples" / "pupper_pipeline.sh").exists()


def test_ci_runs_exactly_the_test_command_block(tmp_path):
    expected = block_after((ROOT / "README.md").read_text(), MARKERS[1])
    proc, ran = run_ci_script(ROOT, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert ran == expected


def test_ci_refuses_a_readme_without_the_test_command(tmp_path):
    repo = tmp_path / "repo"
    (repo / ".ci").mkdir(parents=True)
    shutil.copy(ROOT / ".ci" / "run", repo / ".ci" / "run")
    readme = (ROOT / "README.md").read_text()
    (repo / "README.md").write_text(readme.replace(MARKERS[1], "<!-- no marker -->"))
    proc, ran = run_ci_script(repo, tmp_path)
    assert proc.returncode == 1 and ran is None
    assert "no test command found in README.md" in proc.stderr


def test_readme_is_a_front_page():
    n = len((ROOT / "README.md").read_text().splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines; at most {README_MAX_LINES} (move detail to docs/)"


# --- links ----------------------------------------------------------------------------------------------------------


def test_every_relative_link_leads_to_a_file_and_heading():
    problems = [p for page in pages() for p in broken_links(page)]
    assert not problems, "\n".join(problems)


def test_the_link_check_catches_a_missing_file_a_missing_heading_and_an_escape(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## The `quick` subset: 7 cells\n")
    page = tmp_path / "README.md"
    page.write_text(
        "[ok](docs/a.md) [ok](docs/a.md#the-quick-subset-7-cells) [ok](#top) `[not a link](nowhere.md)`\n"
        "# Top\n"
        "```\n[in a code block](nowhere.md)\n```\n"
        "[gone](docs/b.md) [bad anchor](docs/a.md#the-quick-subset) [out](../outside.md) [web](https://x.org/y)\n"
    )  # fmt: skip
    problems = broken_links(page, tmp_path)
    assert len(problems) == 3, problems
    assert "README.md:6: link (docs/b.md): no file docs/b.md" in problems[0]
    assert "no heading with id 'the-quick-subset'" in problems[1]
    assert "leaves the repository" in problems[2]


@pytest.mark.parametrize(
    "heading, expected",
    [
        ("The quick subset", "the-quick-subset"),
        ("`trot watchdog`", "trot-watchdog"),
        ("The motion service (`--release_motion_service`)", "the-motion-service---release_motion_service"),
        ("Serial protocol: host ↔ motor/IMU microcontroller", "serial-protocol-host--motorimu-microcontroller"),
        ("Hello (0x01), host → MCU", "hello-0x01-host--mcu"),
    ],
)
def test_heading_ids_are_githubs(heading, expected):
    assert slug(heading) == expected


def test_the_index_lists_every_page():
    index = ROOT / "docs" / "README.md"
    linked = {
        (index.parent / target.partition("#")[0]).resolve()
        for _, line in prose_lines(index.read_text())
        for target in LINK.findall(line)
    }
    missing = [str(p.relative_to(ROOT)) for p in pages() if p not in (index, ROOT / "README.md") and p not in linked]
    assert not missing, f"docs/README.md does not link {missing}"


# --- command lines --------------------------------------------------------------------------------------------------

TROT_LINE = re.compile(r"(?<![\w./\[-])trot ([a-z][a-z-]*)((?:\s+(?!trot )[^\s|;&`)]+)*)")


def cli_options() -> dict[str, set[str]]:
    """'train' -> its option strings; nested commands as 'bench sim'."""
    from trot.cli import build_parser

    def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        acts = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        return dict(acts[0].choices) if acts else {}

    def options(parser: argparse.ArgumentParser) -> set[str]:
        return {s for a in parser._actions for s in a.option_strings}

    table = {}
    for name, sub in subcommands(build_parser()).items():
        table[name] = options(sub)
        for inner, p in subcommands(sub).items():
            table[f"{name} {inner}"] = options(p)
    return table


def code_texts(text: str) -> list[tuple[int, str, bool]]:
    """(line number, text, in a fenced block) of every inline code span and every line of a fenced block."""
    out, fenced = [], False
    for n, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
        elif fenced:
            out.append((n, line.split(" #")[0], True))
        else:
            out += [(n, m.group(2), False) for m in CODE_SPAN.finditer(line)]
    return out


def is_command_start(before: str) -> bool:
    """In a fenced block only a command is checked (at a line's start, after a `$` prompt, && or |), not output."""
    return re.search(r"(^|&&|\||^\s*\$)\s*$", before) is not None


def wrong_cli_names(page: Path, table: dict[str, set[str]], root: Path = ROOT) -> list[str]:
    """Each `trot <command> --flag` in the page whose command or flag the CLI does not have."""
    problems = []
    for n, snippet, fenced in code_texts(page.read_text()):
        for m in TROT_LINE.finditer(snippet):
            if fenced and not is_command_start(snippet[: m.start()]):
                continue
            words = m.group(2).split()
            name = m.group(1)
            if name not in table:
                problems.append(f"{page.relative_to(root)}:{n}: `trot {name}`: no such command")
                continue
            if words and f"{name} {words[0]}" in table:
                name = f"{name} {words[0]}"
            for flag in (w.split("=")[0] for w in words if re.match(r"^--?[a-zA-Z]", w)):
                if flag not in table[name]:
                    problems.append(f"{page.relative_to(root)}:{n}: `trot {name}` has no {flag}")
    return problems


def test_every_trot_command_line_in_the_docs_is_the_clis():
    table = cli_options()
    problems = [p for page in pages() for p in wrong_cli_names(page, table)]
    assert not problems, "\n".join(problems)


def test_the_cli_check_catches_a_wrong_command_and_a_wrong_flag(tmp_path):
    page = tmp_path / "x.md"
    page.write_text(
        "Run `trot train --num_envs 64 --set ppo.desired_kl=0.005` and `trot bench sim --num_envs 64`.\n"
        "Not `trot train --num-envs 64`, not `trot export --upgrade old.onnx`, not `trot fly`.\n"
        "```bash\ntrot gate walk.onnx --quick   # --not-a-flag in a comment\n"
        "$ trot play run --strict && trot inspect --jsn walk.onnx\n"
        "deploy: node switched out (...); trot stops commanding (printed output, not a command)\n```\n"
    )  # fmt: skip
    problems = wrong_cli_names(page, cli_options(), tmp_path)
    assert problems == [
        "x.md:2: `trot train` has no --num-envs",
        "x.md:2: `trot export` has no --upgrade",
        "x.md:2: `trot fly`: no such command",
        "x.md:5: `trot inspect` has no --jsn",
    ]
