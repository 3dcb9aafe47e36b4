"""The shell commands of README.md and docs/*.md run as written, and their relative links resolve.

Every fenced block in bash, sh, shell or console is either run here or marked, on the line right
before it, with `<!-- not run by test: <reason> -->`: the test command itself (it would run this
test), a ROS 2 apt install or colcon workspace, `ros2 launch`, a GPU, weights, long benchmarks.
The blocks of one document run in order (a later block may use what an earlier one wrote, as a
reader following the page would), with bash -e, in a temporary copy of the repository with
`../shared` beside it, in the test suite's environment (tools/dev: the venv's python and the
console scripts on PATH). In console blocks only the `$ ` lines are commands.
"""

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = [REPO / "README.md", REPO / "CHANGELOG.md", *sorted((REPO / "docs").glob("*.md"))]
SHELL = {"bash", "sh", "shell", "console"}
MARKER = re.compile(r"<!--\s*not run by test:\s*(?P<reason>.*?)\s*-->")
FENCE = re.compile(r"^ {0,3}(?P<fence>`{3,}|~{3,})\s*(?P<info>[^\s`]*)")
BLOCK_TIMEOUT_S = 300
NOT_COPIED = {".git", "out", "build", "install", "log"}  # at the top of the repository
NOT_COPIED_ANYWHERE = shutil.ignore_patterns("__pycache__", ".pytest_cache", ".hypothesis")


@dataclass
class Block:
    document: Path
    line: int  # 1-based line of the opening fence
    language: str
    text: str
    reason: str | None  # why it is not run; None: run

    def __str__(self):
        return f"{self.document.relative_to(REPO)}:{self.line}"

    def script(self):
        if self.language != "console":
            return self.text
        return "\n".join(line[2:] for line in self.text.splitlines() if line.startswith("$ "))


def _fenced(lines):
    """(opening line index, closing line index, info string) of each fenced block."""
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, end = m["fence"], i + 1
        while end < len(lines) and not re.fullmatch(rf" {{0,3}}{fence[0]}{{{len(fence)},}}\s*", lines[end]):
            end += 1
        blocks.append((i, end, m["info"].lower()))
        i = end + 1
    return blocks


def shell_blocks(document):
    lines = document.read_text().splitlines()
    blocks = []
    for start, end, info in _fenced(lines):
        if info in SHELL:
            mark = MARKER.fullmatch(lines[start - 1].strip()) if start else None
            blocks.append(Block(document, start + 1, info, "\n".join(lines[start + 1:end]),
                                mark["reason"] if mark else None))
    return blocks


def _prose(document):
    """The document's lines outside fenced blocks (None for the lines inside)."""
    lines = document.read_text().splitlines()
    for start, end, _ in _fenced(lines):
        lines[start:end + 1] = [None] * (len(lines[start:end + 1]))
    return lines


def _without_code(line):
    return re.sub(r"(`+).*?\1", "", line)


def test_every_shell_block_is_run_or_says_why_not():
    problems = []
    for document in DOCUMENTS:
        lines = document.read_text().splitlines()
        shell_starts = {start for start, _, info in _fenced(lines) if info in SHELL}
        for i, line in enumerate(_prose(document)):
            if line is None or "not run by test" not in _without_code(line):
                continue
            mark = MARKER.fullmatch(line.strip())
            where = f"{document.relative_to(REPO)}:{i + 1}"
            if not mark or not mark["reason"]:
                problems.append(f"{where}: write the marker as `<!-- not run by test: <reason> -->`")
            elif i + 1 not in shell_starts:
                problems.append(f"{where}: the marker is not on the line right before a shell block")
    assert not problems, "\n".join(problems)
    readme = [b for b in shell_blocks(REPO / "README.md") if b.reason is None]
    assert any(b.script().strip().startswith("tools/dev demo") for b in readme), "the README's demo block must run"


def _slug(heading):
    """GitHub's anchor of a heading: links to their text, lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(document):
    seen, result = {}, set()
    for line in _prose(document):
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line or "")
        if m:
            slug = _slug(m[1])
            result.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
            seen[slug] = seen.get(slug, 0) + 1
    return result


def links(document):
    """(line number, target) of each markdown link and image outside code."""
    found = []
    for i, line in enumerate(_prose(document)):
        if line is None:
            continue
        line = _without_code(line)
        found += [(i + 1, m[1]) for m in re.finditer(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", line)]
        found += [(i + 1, m[1]) for m in re.finditer(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", line)]
    return found


def test_relative_links_resolve():
    problems = []
    for document in DOCUMENTS:
        for line, target in links(document):
            if re.match(r"[A-Za-z][A-Za-z0-9+.-]*:", target):  # https:, mailto:, ...
                continue
            path, _, anchor = target.partition("#")
            where = f"{document.relative_to(REPO)}:{line}: {target}"
            resolved = (document.parent / path).resolve() if path else document
            if not resolved.exists():
                problems.append(f"{where}: no such file")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                problems.append(f"{where}: no heading with that anchor in {resolved.relative_to(REPO)}")
    assert not problems, "\n".join(problems)


RUN = [d for d in DOCUMENTS if any(b.reason is None for b in shell_blocks(d))]


@pytest.mark.skipif(not os.environ.get("MAPANYTHING_ROS_ENV"),
                    reason="the commands are written for the tools/dev environment (tools/dev test)")
@pytest.mark.parametrize("document", RUN, ids=[str(d.relative_to(REPO)) for d in RUN])
def test_commands_run_as_written(document, tmp_path):
    clone = tmp_path / REPO.name
    shutil.copytree(REPO, clone, symlinks=True, ignore=lambda folder, names: (
        NOT_COPIED_ANYWHERE(folder, names) | (NOT_COPIED & set(names) if Path(folder) == REPO else set())))
    if (REPO.parent / "shared").is_dir():  # third-party tarballs (tools/dev's environment key), fixtures
        (tmp_path / "shared").symlink_to(REPO.parent / "shared")
    env = {**os.environ, "PYTHONPATH": str(clone),
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    for block in shell_blocks(document):
        if block.reason is not None:
            continue
        done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block.script()], cwd=clone, env=env,
                              capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S)
        output = (done.stdout + done.stderr)[-4000:]
        assert done.returncode == 0, f"{block} failed (exit {done.returncode}):\n{block.script()}\n{output}"
        assert "building the environment" not in done.stderr, \
            f"{block}: tools/dev rebuilt its environment for the copy (its cache key differs from the suite's)"
