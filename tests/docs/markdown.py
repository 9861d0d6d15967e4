"""The fenced code blocks of a markdown file, and what the text says about each.

A block is what lies between a line of three backticks with an info string
(``python``, ``bash``, ``text``, ``yaml``, ...) and the next line of three
backticks. Markers are HTML comments (invisible when rendered) on the lines
just above a block, blank lines allowed between:

- ``<!-- continues -->`` above a python block: it runs after the python block
  before it, in the same process and namespace (its names are defined there);
- ``<!-- output -->`` above a text block: it is the output of the runnable
  block before it even though prose lies between (directly after one, with
  only blank lines between, it is that block's output without a marker).

A block whose first line is a comment naming a file (``# train.py``,
``# my_conf/myexp.yaml``) is that file: it is written there before any block
of its document runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

RUNNABLE = ("python", "bash", "sh", "shell")
OUTPUT = ("text", "console", "output")
_FENCE = re.compile(r"^(?P<indent>\s*)```(?P<info>[\w+-]*)\s*$")
_MARKER = re.compile(r"^\s*<!--\s*(?P<word>[\w-]+)\s*-->\s*$")
_FILE = re.compile(r"^#\s*(?P<path>[\w.-]+(?:/[\w.-]+)*\.\w+)\s*$")


@dataclass
class Block:
    """One fenced block: where it starts (the line after the fence, 1-based) and what it says."""

    doc: Path
    line: int  # the block's first line of code
    lang: str
    text: str
    markers: tuple[str, ...] = ()
    after_runnable: bool = False  # only blank lines between it and the runnable block before it
    output: Block | None = None  # the text block that shows what this block prints
    head: Block | None = None  # for a block marked ``continues``: the first block of its chain
    continues: list[Block] = field(default_factory=list)  # the blocks that follow a head

    @property
    def name(self) -> str:
        return f"{self.doc.name}:{self.line}"

    @property
    def file(self) -> str | None:
        """The file this block is, when its first line names one (``# train.py``)."""
        first = self.text.split("\n", 1)[0]
        match = _FILE.match(first)
        return match["path"] if match else None

    @property
    def runnable(self) -> bool:
        return self.lang in RUNNABLE


def blocks(doc: Path) -> list[Block]:
    """Every fenced block of ``doc``, in order, with its markers; text blocks tied to output."""
    found: list[Block] = []
    lines = doc.read_text().split("\n")
    markers: list[str] = []
    blank_since_runnable = False  # only blank lines since the last runnable block's end
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if not fence:
            marker = _MARKER.match(lines[i])
            if marker:
                markers.append(marker["word"])
            elif lines[i].strip():
                markers, blank_since_runnable = [], False
            i += 1
            continue
        indent, end = len(fence["indent"]), i + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        body = "\n".join(line[indent:] for line in lines[i + 1 : end]) + "\n"
        block = Block(doc, i + 2, fence["info"], body, tuple(markers), blank_since_runnable)
        found.append(block)
        markers, blank_since_runnable = [], block.runnable
        i = end + 1
    _tie(found)
    return found


def _tie(found: list[Block]) -> None:
    """Give each runnable block its output block and each python block its continuations."""
    last_runnable: Block | None = None
    last_python: Block | None = None
    for block in found:
        if block.lang in OUTPUT and last_runnable is not None:
            if block.after_runnable or "output" in block.markers:
                if last_runnable.output is not None:
                    raise ValueError(
                        f"{block.name}: a second output block for {last_runnable.name}"
                    )
                last_runnable.output = block
        if "continues" in block.markers:
            if block.lang != "python" or last_python is None:
                raise ValueError(f"{block.name}: <!-- continues --> needs a python block before")
            block.head = last_python.head or last_python
            block.head.continues.append(block)
        if block.runnable:
            last_runnable = block
        if block.lang == "python":
            last_python = block
