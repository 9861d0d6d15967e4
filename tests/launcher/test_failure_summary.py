"""The failure summary's culprit, from attempt folders laid out as torch's agent writes them."""

import json

from launch.job.attempts import what_failed


def _attempt(tmp_path, ranks):
    for local in range(ranks):
        (tmp_path / str(local)).mkdir()
        (tmp_path / str(local) / "stderr.log").write_text("")
    return tmp_path


def test_the_rank_the_agent_saw_fail_first_is_blamed_before_a_silent_other(tmp_path):
    """Rank 1 was SIGKILLed; rank 0, stopped while writing its error, left no record."""
    attempt = _attempt(tmp_path, 2)
    assert what_failed(attempt, (-9, 1, 4242), 0) == "rank 1 (local rank 1) was killed by SIGKILL"


def test_without_the_agents_record_the_first_silent_rank_is_named(tmp_path):
    attempt = _attempt(tmp_path, 3)
    what = what_failed(attempt, None, 4)
    assert (
        what
        == "rank 4 (local rank 0) died without raising an exception (killed, or exited abruptly)"
    )


def test_a_rank_that_raised_is_the_culprit(tmp_path):
    attempt = _attempt(tmp_path, 2)
    trace = 'Traceback (most recent call last):\n  File "x.py", line 1, in f\nValueError: bad batch'
    extra = {"py_callstack": trace, "timestamp": "1"}
    error = json.dumps({"message": {"message": "ValueError: bad batch", "extraInfo": extra}})
    (attempt / "1" / "error.json").write_text(error)
    assert what_failed(attempt, (1, 1, 7), 0).startswith("rank 1 (local rank 1) raised ValueError")
