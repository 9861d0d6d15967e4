"""The docs harness's own rules: how output is compared and how blocks are read (no processes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docs.expected import line_matches, mismatch
from tests.docs.markdown import blocks


@pytest.mark.parametrize(
    "expected, actual",
    [
        ("epoch 8  accuracy=0.9721", "epoch 8  accuracy=0.9695"),  # within 5%
        ("loss=0.0012", "loss=0.0091"),  # within 0.01
        ("9,610 parameters", "9610 parameters"),
        (
            "Run folder: /home/you/distengine/outputs/2026-11-25/18-00-34",
            "Run folder: /home/you/distengine/outputs/2027-01-02/03-04-05",
        ),
        (
            "[22/22] 100%|██████████, loss=1.87 [00:00<00:00]",
            "[22/22] 100%|██████████, loss=1.86 [01:02<00:00]",
        ),
        (".../checkpoint_<iteration>.pt", "/tmp/tmpa_1/checkpoint_64.pt"),
        ("{'accuracy': ..., 'loss': ...}", "{'accuracy': 0.5, 'loss': 0.6931}"),
        ("a  b", "a b"),
    ],
)
def test_what_matches(expected: str, actual: str) -> None:
    assert line_matches(expected, actual)


@pytest.mark.parametrize(
    "expected, actual",
    [
        ("epoch 8  accuracy=0.9721", "epoch 8  accuracy=0.90"),  # 7% off
        ("Epoch [8/8]", "Epoch [2/2]"),  # integers are equal
        ("epoch 8  validation", "epoch 8  valid"),  # words are exact
        ("rank 0 of 2", "rank 0 of 2 more"),  # the whole line
        ("<iteration>.pt", "64 .pt"),  # a placeholder is one word
    ],
)
def test_what_does_not_match(expected: str, actual: str) -> None:
    assert not line_matches(expected, actual)


def test_lines_elided_and_folder_named() -> None:
    expected = "...\nfirst\n...\nlast /home/you/distengine/x\n"
    assert mismatch(expected, "make noise\nfirst\na\nb\nlast /tmp/p/x\n", "/tmp/p") is None
    assert mismatch(expected, "first\nlast /tmp/p/x", "/tmp/p") is None  # ... may be nothing
    assert "ended" in mismatch(expected, "first\n", "/tmp/p")
    assert "goes on" in mismatch("first\n", "first\nsecond\n")


def test_blocks_markers_files_and_outputs(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "```python\nx = 1\n```\n\n```text\n1\n```\n\n"  # output: only blank lines between
        "<!-- continues -->\n```python\nprint(x)\n```\n\n"
        "Some prose.\n\n```text\nnot output\n```\n\n"
        "```bash\npython train.py\n```\n\nIt prints:\n\n<!-- output -->\n```text\nhello\n```\n\n"
        "```python\n# train.py\nprint('hello')\n```\n"
    )
    first, out, second, prose, bash, printed, script = blocks(doc)
    assert first.output is out and second.head is first and first.continues == [second]
    assert prose not in (first.output, second.output, bash.output)
    assert bash.output is printed and script.file == "train.py" and script.head is None
    assert (first.line, second.line, script.line) == (2, 11, 32)
