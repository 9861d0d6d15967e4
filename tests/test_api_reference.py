"""docs/api.md is generated from the docstrings and must match them."""

import importlib
import inspect
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import api_reference  # noqa: E402


def test_the_committed_reference_matches_the_docstrings():
    assert (ROOT / "docs" / "api.md").read_text() == api_reference.render(), (
        "docs/api.md is out of date: run `make docs`"
    )


def test_every_public_name_has_a_docstring():
    missing = [
        f"{module}.{name}"
        for module in api_reference.MODULES
        for name in importlib.import_module(module).__all__
        if callable(getattr(importlib.import_module(module), name))
        and not inspect.getdoc(getattr(importlib.import_module(module), name))
    ]
    assert missing == []
