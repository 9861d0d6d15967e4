"""The harness that runs the code blocks of README.md and docs/guide.md (see tests/test_docs.py)."""
