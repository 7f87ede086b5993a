"""The shell blocks of README.md and the output documented for them.

Conventions (README.md says them too, under "Walkthroughs run in CI"):

* a fenced block tagged ``sh``, ``bash`` or ``console`` is a script; the README
  test runs every one of them, from top to bottom, as written;
* a fenced ``text`` block whose first line is ``# output`` and that directly
  follows a script is the output the script must print: each further line must
  appear in that order in its stdout, ``…`` standing for any text;
* a script whose first line is ``# readme: not run (REASON)`` is skipped with
  REASON (keep it rare: say what checks it instead);
* a synopsis (brackets, alternatives) is a ``text`` block, not a script.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

SCRIPT_TAGS = frozenset({"sh", "bash", "console"})
NOT_RUN = re.compile(r"^# readme: not run \((?P<reason>.+)\)$")
_FENCE = re.compile(r"^```(?P<tag>[\w-]*)\s*$")


@dataclass(frozen=True, kw_only=True)
class ShellBlock:
    line: int  # 1-based line of the opening fence
    tag: str
    script: str
    expected_output: tuple[str, ...] = ()

    @property
    def not_run_reason(self) -> str | None:
        first = self.script.split("\n", 1)[0]
        match = NOT_RUN.match(first)
        return match.group("reason") if match else None

    def output_pattern(self, line: str) -> re.Pattern[str]:
        return re.compile(".*".join(re.escape(part) for part in line.split("…")))


@dataclass(frozen=True)
class _Fence:
    line: int
    tag: str
    body: str
    end: int  # line of the closing fence


def _fences(text: str) -> list[_Fence]:
    fences: list[_Fence] = []
    lines = text.split("\n")
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        start = index
        index += 1
        while index < len(lines) and lines[index].rstrip() != "```":
            index += 1
        body = "\n".join(lines[start + 1 : index]) + "\n"
        fences.append(_Fence(start + 1, opening.group("tag"), body, index + 1))
        index += 1
    return fences


def shell_blocks(readme: Path) -> list[ShellBlock]:
    """Every script block of ``readme`` with the ``# output`` block that follows it, if any."""
    text = readme.read_text(encoding="utf-8")
    lines = text.split("\n")
    fences = _fences(text)
    blocks: list[ShellBlock] = []
    for position, fence in enumerate(fences):
        if fence.tag not in SCRIPT_TAGS:
            continue
        expected: tuple[str, ...] = ()
        if position + 1 < len(fences):
            following = fences[position + 1]
            between = lines[fence.end : following.line - 1]
            body = following.body.split("\n")
            adjacent = all(not line.strip() for line in between)
            if adjacent and following.tag == "text" and body[0].strip() == "# output":
                expected = tuple(line for line in body[1:] if line.strip())
        blocks.append(
            ShellBlock(line=fence.line, tag=fence.tag, script=fence.body, expected_output=expected)
        )
    return blocks
