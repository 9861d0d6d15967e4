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


def test_ranks_stopped_after_a_rank_died_are_not_called_the_cause(tmp_path):
    """Rank 2 was SIGKILLed; ranks 0 and 1, sleeping between collectives, were stopped."""
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

    from launch.job.failures import summarize

    attempt = _attempt(tmp_path, 3)
    for local in (0, 1):
        dump = 'Current thread 0x00007f (most recent call first):\n  File "job.py", line 9 in nap\n'
        (attempt / str(local) / "stacks.txt").write_text(dump)
    failure = ProcessFailure(local_rank=2, pid=7, exitcode=-9, error_file="")
    summary = summarize({2: failure}, attempt)
    assert summary.splitlines()[0] == "rank 2 (local rank 2) was killed by SIGKILL"
    assert "not inside a collective" not in summary


def test_with_no_rank_dead_the_rank_outside_the_collectives_is_named(tmp_path):
    """Every rank raised a collective's timeout but rank 1, which the agent found elsewhere."""
    attempt = _attempt(tmp_path, 2)
    dump = 'Current thread 0x00007f (most recent call first):\n  File "job.py", line 9 in nap\n'
    (attempt / "1" / "stacks.txt").write_text(dump)
    trace = (
        "Traceback (most recent call last):\n"
        '  File "torch/distributed/distributed_c10d.py", line 1, in all_reduce\n'
        "RuntimeError: Connection closed by peer"
    )
    extra = {"py_callstack": trace, "timestamp": "1"}
    message = {
        "message": {"message": "RuntimeError: Connection closed by peer", "extraInfo": extra}
    }
    (attempt / "0" / "error.json").write_text(json.dumps(message))
    from launch.job.failures import summarize

    summary = summarize({}, attempt)
    assert summary.startswith("rank 1 (local rank 1) was not inside a collective"), summary
