"""A stop signal before the ranks start is never lost, whatever Python is doing when it comes.

Raised inside an import, an exception can be swallowed (a module lock's callback: "Exception
ignored in ... _get_module_lock", and the job then ran to its end with exit 0) or abort the
process (torch's C++ code: "terminate called after throwing ... pybind11::error_already_set").
"""

from __future__ import annotations

import os
import signal
import sys

import pytest

from launch.job import signals


@pytest.fixture
def early(monkeypatch):
    """The launcher's early handlers in this process, put back afterwards."""
    saved = {signum: signal.getsignal(signum) for signum in signals.STOP_SIGNALS}
    monkeypatch.setattr(signals._Early, "signals", [])
    signals.stop_early()
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def test_a_stop_signal_inside_an_import_is_kept_and_raised_before_the_ranks_start(
    early, tmp_path, monkeypatch
):
    (tmp_path / "signalled_while_imported.py").write_text(
        "import os, signal\nos.kill(os.getpid(), signal.SIGTERM)\nDONE = sum(range(10000))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "signalled_while_imported", raising=False)
    import signalled_while_imported  # the import itself is not broken by the signal

    assert signalled_while_imported.DONE == sum(range(10000))
    with pytest.raises(signals.EarlyStop) as stop:
        signals.check_early()
    assert stop.value.signal == "SIGTERM"
    with pytest.raises(signals.EarlyStop):  # the ranks' start refuses too
        signals.StopSignals("", grace_s=1).__enter__()


def test_outside_an_import_a_stop_signal_raises_at_once_ctrl_c_included(early):
    with pytest.raises(signals.EarlyStop) as stop:
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):  # the handler runs between two bytecodes
            pass
    assert stop.value.signal == "SIGINT"


def test_a_stop_that_surfaced_as_a_config_error_is_said_as_the_stop(early, monkeypatch, capsys):
    """Hydra composing when Ctrl-C came: the error it then raised is not the user's input."""
    from launch import cli
    from launch.config.errors import ConfigError

    def prepare(self):
        signals._Early.signals.append("SIGINT")
        raise ConfigError("defaults: 'NoneType' object has no attribute '_invalidate_flags_cache'")

    monkeypatch.setattr(cli.Launch, "prepare", prepare)
    monkeypatch.setattr(sys, "argv", ["launch", "trainer.max_epochs=1"])
    with pytest.raises(SystemExit) as end:
        cli.main()
    assert end.value.code == 130
    said = capsys.readouterr().err.strip()
    assert said == "error: stopped by Ctrl-C (SIGINT) before the ranks started"
