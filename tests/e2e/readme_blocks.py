"""The README's fenced code blocks, and which of them are marked runnable.

A block is runnable when the line right before its opening fence is an HTML
comment ``<!-- runnable: NAME -->`` (invisible on GitHub). tests/e2e/test_readme.py
runs the marked blocks and asserts that exactly the expected names are marked,
so removing a marker fails the test instead of silently skipping it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

MARKER_RE = re.compile(r"^\s*<!--\s*runnable:\s*(\S+)\s*-->\s*$")
FENCE_RE = re.compile(r"^(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)\s*$")


class ReadmeError(AssertionError):
    """The README does not have the shape the test relies on."""


@dataclass
class Block:
    lang: str
    body: str
    line: int  # 1-based line of the opening fence
    marker: str | None  # NAME of a `<!-- runnable: NAME -->` right before the fence


def parse(text: str) -> list[Block]:
    """Every fenced block, in order. Markers not directly before a fence are errors."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    pending: tuple[str, int] | None = None  # (marker name, line) waiting for its fence
    while i < len(lines):
        m = FENCE_RE.match(lines[i])
        if m:
            fence, start = m.group("fence"), i
            closing = re.compile(r"\s*" + re.escape(fence[0]) + r"{%d,}\s*" % len(fence))
            body: list[str] = []
            i += 1
            while i < len(lines) and not closing.fullmatch(lines[i]):
                body.append(lines[i])
                i += 1
            if i == len(lines):
                raise ReadmeError(f"README line {start + 1}: code fence never closed")
            name = None
            if pending is not None:
                if pending[1] != start - 1:
                    raise ReadmeError(f"README line {pending[1] + 1}: marker `runnable: {pending[0]}` "
                                      f"must be the line right before a code fence")
                name = pending[0]
                pending = None
            blocks.append(Block(m.group("lang"), "\n".join(body) + "\n", start + 1, name))
            i += 1
            continue
        mm = MARKER_RE.match(lines[i])
        if mm:
            if pending is not None:
                raise ReadmeError(f"README line {pending[1] + 1}: marker `runnable: {pending[0]}` "
                                  f"is not followed by a code fence")
            pending = (mm.group(1), i)
        elif pending is not None and lines[i].strip():
            raise ReadmeError(f"README line {pending[1] + 1}: marker `runnable: {pending[0]}` "
                              f"must be the line right before a code fence")
        i += 1
    if pending is not None:
        raise ReadmeError(f"README line {pending[1] + 1}: marker `runnable: {pending[0]}` "
                          f"is not followed by a code fence")
    return blocks


def runnable(path: Path) -> dict[str, Block]:
    """Marked blocks by name; duplicate names and non-shell marked blocks are errors."""
    found: dict[str, Block] = {}
    for block in parse(path.read_text()):
        if block.marker is None:
            continue
        if block.marker in found:
            raise ReadmeError(f"README line {block.line}: runnable block {block.marker!r} is marked twice "
                              f"(first at line {found[block.marker].line})")
        if block.lang not in ("sh", "bash", "shell", "console"):
            raise ReadmeError(f"README line {block.line}: runnable block {block.marker!r} is "
                              f"```{block.lang}, not a shell block")
        found[block.marker] = block
    return found


def split_lines(text: str, pattern: str, where: str) -> tuple[str, str, str]:
    """(lines before, the one line matching ``pattern``, lines after) of ``text``.

    The pattern must match exactly one line: the test substitutes or pauses at
    that line, and a README edit that removes or duplicates it must fail loudly.
    """
    rx = re.compile(pattern)
    lines = text.splitlines()
    hits = [i for i, line in enumerate(lines) if rx.search(line)]
    if len(hits) != 1:
        raise ReadmeError(f"{where}: expected exactly one line matching {pattern!r}, "
                          f"found {len(hits)}:\n{text}")
    i = hits[0]
    before = "".join(line + "\n" for line in lines[:i])
    after = "".join(line + "\n" for line in lines[i + 1:])
    return before, lines[i], after


def split_at(block: Block, pattern: str) -> tuple[str, str, str]:
    """split_lines() of a block's body."""
    return split_lines(block.body, pattern, f"README block {block.marker!r} (line {block.line})")
