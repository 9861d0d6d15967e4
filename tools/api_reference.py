"""Write ``docs/api.md`` from the public names' docstrings (``make docs``).

The test suite regenerates it and fails when the committed file differs, so
the reference stays in sync with the code by construction.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from pathlib import Path

MODULES = [
    "distengine.engine",
    "distengine.distributed",
    "distengine.metrics",
    "distengine.metrics.regression",
    "distengine.metrics.clustering",
    "distengine.handlers",
    "distengine.checkpoint",
    "distengine.exceptions",
    "distengine.utils",
]
TARGET = Path(__file__).resolve().parent.parent / "docs" / "api.md"


def _signature(obj: object) -> str:
    """The signature, with default functions shown by name (not by address)."""
    try:
        text = str(inspect.signature(obj))
    except (TypeError, ValueError):
        return ""
    return re.sub(r"<function ([\w.<>]+) at 0x[0-9a-f]+>", r"\1", text)


def _entry(module: str, name: str) -> str:
    obj = getattr(importlib.import_module(module), name)
    if not callable(obj):  # a constant: its value (its type's docstring would say nothing)
        return f"### `{name}`\n\n`{obj!r}`\n"
    doc = inspect.getdoc(obj) or ""
    kind = "class" if inspect.isclass(obj) else "function"
    return f"### `{name}{_signature(obj)}` ({kind})\n\n{doc}\n"


def render() -> str:
    """The whole reference as markdown."""
    parts = [
        "# API reference\n",
        "Generated from the docstrings by `python tools/api_reference.py`; do not edit by hand.\n",
    ]
    for module in MODULES:
        names = sorted(importlib.import_module(module).__all__, key=str.lower)
        parts.append(f"## `{module}`\n")
        parts.extend(_entry(module, name) for name in names)
    return "\n".join(parts)


if __name__ == "__main__":
    TARGET.write_text(render())
    print(f"wrote {TARGET}", file=sys.stderr)
