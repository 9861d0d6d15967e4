"""ProgressBar: PyTorch-Ignite 0.5.5's documented positions and texts, in the three places it draws.

- a terminal: tqdm redraws in place (a stream whose ``isatty()`` is true);
- a launcher's terminal (``DISTENGINE_CONSOLE=terminal``, stdout or stderr):
  frames ended by ``\\r``, lines ended by ``\\n``, never a line glued to a frame;
- anywhere else (a pipe, a file, a StringIO): plain lines now and then.
"""

import io
import re

import pytest
import torch

from distengine.engine import Engine, Events
from distengine.handlers import ProgressBar
from distengine.handlers import console as bar_console


class Terminal(io.StringIO):
    def isatty(self):
        return True


class LauncherStdout(io.StringIO):
    """What a rank's stdout is under ``python -m launch``: a file the launcher follows."""

    def fileno(self):
        return 1


def stream(kind, monkeypatch):
    if kind == "frames":
        monkeypatch.setenv(bar_console.CONSOLE_ENV, "terminal")
        monkeypatch.setenv("COLUMNS", "100")
        return LauncherStdout()
    monkeypatch.delenv(bar_console.CONSOLE_ENV, raising=False)
    return Terminal() if kind == "terminal" else io.StringIO()


def shown(text):
    """What stays on the screen: the last redraw of each line (a blank one clears it)."""
    return [([s for s in line.split("\r") if s] or [""])[-1] for line in text.split("\n")]


def last_bar(text):
    bars = [s for s in re.split(r"[\r\n]", text) if re.search(r"\[\d+/\d+\]\s+\d+%", s)]
    return bars[-1]


KINDS = ["terminal", "frames", "lines"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "event, closing, epochs, length, end",
    [
        (Events.ITERATION_STARTED(every=10), Events.EPOCH_COMPLETED, 1, 100, "[100/100] 100%"),
        (Events.ITERATION_COMPLETED(every=7), Events.EPOCH_COMPLETED, 2, 30, "[30/30] 100%"),
        (Events.ITERATION_COMPLETED, Events.EPOCH_COMPLETED, 3, 5, "[5/5] 100%"),
        (Events.EPOCH_COMPLETED, Events.COMPLETED, 10, 7, "[10/10] 100%"),
        (Events.EPOCH_STARTED, Events.COMPLETED, 4, 3, "[4/4] 100%"),
    ],
)
def test_the_bar_ends_where_ignites_does(monkeypatch, kind, event, closing, epochs, length, end):
    out = stream(kind, monkeypatch)
    engine = Engine(lambda e, b: None)
    ProgressBar(persist=True, file=out, mininterval=0.0).attach(
        engine, event_name=event, closing_event_name=closing
    )
    engine.run(range(length), max_epochs=epochs)
    final = last_bar(out.getvalue())
    assert end in final, out.getvalue()
    if closing == Events.COMPLETED:  # one bar for the run: "Epoch", no [k/n] suffix
        assert final.startswith("Epoch: ["), final
    elif epochs > 1:
        assert final.startswith(f"Epoch [{epochs}/{epochs}]: ["), final
    else:
        assert final.startswith("Iteration: ["), final


@pytest.mark.parametrize("kind", KINDS)
def test_desc_output_metrics_and_state_attributes(monkeypatch, kind):
    out = stream(kind, monkeypatch)
    engine = Engine(lambda e, b: torch.tensor(0.5))

    @engine.on(Events.ITERATION_COMPLETED)
    def publish(e):
        e.state.metrics["acc"] = torch.tensor([0.25, 0.75])
        e.state.alpha = 3

    bar = ProgressBar(persist=True, file=out, desc="Training", mininterval=0.0)
    bar.attach(engine, ["acc"], output_transform=lambda x: {"loss": x}, state_attributes=["alpha"])
    engine.run(range(4), max_epochs=2)
    final = last_bar(out.getvalue())
    assert final.startswith("Training [2/2]: [4/4] 100%"), final
    assert "loss=0.5" in final and "acc_0=0.25" in final and "acc_1=0.75" in final
    assert "alpha=3" in final
    grid = Engine(lambda e, b: torch.zeros(2, 2))
    ProgressBar(file=out, mininterval=0.0).attach(grid, output_transform=lambda x: {"grid": x})
    with pytest.warns(UserWarning, match="can not log tensor with 2 dimensions \\('grid'\\)"):
        grid.run(range(2))  # Ignite's warning; the bar goes on without it


@pytest.mark.parametrize("kind", KINDS)
def test_log_message_writes_to_the_bars_file(monkeypatch, capsys, kind):
    out = stream(kind, monkeypatch)
    engine = Engine(lambda e, b: None)
    bar = ProgressBar(persist=True, file=out, mininterval=0.0)
    bar.attach(engine)
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=2), lambda: bar.log_message("hi"))
    engine.run(range(4))
    assert "hi\n" in out.getvalue()
    captured = capsys.readouterr()
    assert "hi" not in captured.out + captured.err


def test_frames_end_in_carriage_returns_and_lines_stay_apart(monkeypatch):
    """Under a launcher on a terminal nothing is glued to a frame: text after one starts a line."""
    out = stream("frames", monkeypatch)
    engine = Engine(lambda e, b: None)
    bar = ProgressBar(persist=True, file=out, mininterval=0.0)
    bar.attach(engine)
    engine.add_event_handler(Events.ITERATION_COMPLETED(once=3), lambda: bar.log_message("hi"))
    engine.run(range(6), max_epochs=2)
    text = out.getvalue()
    assert text.endswith("\n") and "\r\r" not in text
    pieces = re.findall(r"[^\r\n]*[\r\n]", text)
    assert "hi\n" in pieces  # a line of its own, right after a frame
    for piece in pieces:
        assert piece == "hi\n" or re.match(r"Epoch \[\d/2\]: \[\d/6\]", piece), piece
    assert all(len(p) <= 100 for p in pieces)  # as wide as the launcher's terminal (COLUMNS)
    finals = [p for p in pieces if p.endswith("\n") and p != "hi\n"]
    assert [f[:21] for f in finals] == ["Epoch [1/2]: [6/6] 10", "Epoch [2/2]: [6/6] 10"]


def test_without_a_terminal_the_bar_prints_lines_now_and_then(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr("distengine.handlers.progress_bar.time.monotonic", lambda: clock[0])
    out = stream("lines", monkeypatch)

    def step(engine, batch):
        clock[0] += 1.0  # one second per iteration

    engine = Engine(step)
    ProgressBar(persist=True, file=out, line_interval_s=30.0).attach(engine)
    engine.run(range(100), max_epochs=2)
    text = out.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    # each 100 s epoch: a line after 30, 60 and 90 s of it, then its last state
    assert len(lines) == 8, text
    assert [re.search(r"\[(\d+)/100\]", line)[1] for line in lines[:4]] == ["31", "61", "91", "100"]


def test_a_bar_without_persist_leaves_nothing_behind(monkeypatch):
    for kind in KINDS:
        out = stream(kind, monkeypatch)
        engine = Engine(lambda e, b: None)
        ProgressBar(file=out, mininterval=0.0).attach(engine)
        engine.run(range(3))
        text = out.getvalue()
        assert shown(text)[-1].strip() == "", (kind, text)  # cleared (terminal, frames)
        if kind == "lines":
            assert text == ""


@pytest.mark.parametrize("kind, drawn", [("terminal", True), ("frames", True), ("lines", False)])
def test_disable_none_means_where_nothing_draws_it_live(monkeypatch, kind, drawn):
    out = stream(kind, monkeypatch)
    engine = Engine(lambda e, b: None)
    ProgressBar(persist=True, file=out, disable=None).attach(engine)
    engine.run(range(3))
    assert bool(out.getvalue()) == drawn


def test_a_terminated_run_closes_its_bar_where_it_stopped(monkeypatch):
    out = stream("lines", monkeypatch)
    engine = Engine(lambda e, b: e.terminate() if e.state.iteration == 4 else None)
    ProgressBar(persist=True, file=out).attach(engine)
    engine.run(range(10))
    assert "[4/10]" in out.getvalue() and "[10/10]" not in out.getvalue()


def test_the_bar_is_throttled(monkeypatch):
    out = stream("terminal", monkeypatch)
    engine = Engine(lambda e, b: torch.tensor(0.5))
    ProgressBar(persist=True, file=out, mininterval=60.0).attach(
        engine, output_transform=lambda loss: {"loss": loss}
    )
    engine.run(range(1000), max_epochs=2)
    text = out.getvalue()
    assert "Epoch [2/2]: [1000/1000]" in text and "loss=0.5" in text
    assert len(text) < 2000  # a handful of redraws, not 2000


def test_attach_refuses_what_ignite_refuses():
    engine = Engine(lambda e, b: None)
    with pytest.raises(ValueError, match="Closing Event should not be a filtered event"):
        ProgressBar().attach(engine, closing_event_name=Events.EPOCH_COMPLETED(every=2))
    with pytest.raises(ValueError, match="should be called before closing event"):
        ProgressBar().attach(
            engine, event_name=Events.EPOCH_COMPLETED, closing_event_name=Events.EPOCH_STARTED
        )
    with pytest.raises(TypeError, match="metric_names must be None, 'all' or a list"):
        ProgressBar().attach(engine, metric_names="loss")
    with pytest.raises(TypeError, match="output_transform must be callable, got 1"):
        ProgressBar().attach(engine, output_transform=1)


IGNITE_FORMS = {  # each way Ignite's docs attach a bar: (attach kwargs, epochs, final position)
    "default": ({}, 2, "[100/100] 100%"),
    "metric names": ({"metric_names": ["a"]}, 2, "[100/100] 100%"),
    "output": ({"output_transform": lambda out: {"loss": out}}, 2, "[100/100] 100%"),
    "iteration started every 10": (
        {"event_name": Events.ITERATION_STARTED(every=10)},
        2,
        "[100/100] 100%",
    ),
    "iteration completed every 7": (
        {"event_name": Events.ITERATION_COMPLETED(every=7)},
        2,
        "[100/100] 100%",
    ),
    "epochs": (
        {"event_name": Events.EPOCH_COMPLETED, "closing_event_name": Events.COMPLETED},
        3,
        "[3/3] 100%",
    ),
    "epoch started": (
        {"event_name": Events.EPOCH_STARTED, "closing_event_name": Events.COMPLETED},
        3,
        "[3/3] 100%",
    ),
}


@pytest.mark.parametrize("persist", [False, True])
@pytest.mark.parametrize("form", list(IGNITE_FORMS))
def test_a_log_file_never_ends_on_a_stale_position(monkeypatch, form, persist):
    """A slow run writing to a file: lines every 30 s, and the last one of each bar is where
    it closed (the run is done), with or without persist."""
    clock = [0.0]
    monkeypatch.setattr("distengine.handlers.progress_bar.time.monotonic", lambda: clock[0])
    out = stream("lines", monkeypatch)

    def step(engine, batch):
        clock[0] += 0.4  # a 100-iteration epoch takes 40 s
        engine.state.metrics["a"] = 1
        return 0.5

    kwargs, epochs, end = IGNITE_FORMS[form]
    engine = Engine(step)
    ProgressBar(persist=persist, file=out).attach(engine, **kwargs)
    engine.run(range(100), max_epochs=epochs)
    lines = out.getvalue().splitlines()
    assert lines and end in lines[-1], out.getvalue()
    if "closing_event_name" not in kwargs:  # one bar per epoch: each ends full
        assert [line for line in lines if end in line][: epochs - 1] != []
        assert sum(end in line for line in lines) == epochs
