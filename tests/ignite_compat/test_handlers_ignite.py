"""ModelCheckpoint, BaseSaveHandler and EarlyStopping as PyTorch-Ignite 0.5.5 documents them;
compared with Ignite itself where it is installed."""

import itertools
import os

import pytest
import torch
from torch import nn

import distengine.engine as de
import distengine.handlers as dh
import distengine.handlers.checkpoint  # noqa: F401  (dh.checkpoint.BaseSaveHandler, as in Ignite)

try:
    import ignite.engine as ie
    import ignite.handlers as ih
    import ignite.handlers.checkpoint  # noqa: F401
except ImportError:  # the documented values below still run
    ie = ih = None

needs_ignite = pytest.mark.skipif(ie is None, reason="compares with pytorch-ignite")
LIBS = [
    pytest.param((de, dh), id="distengine"),
    pytest.param((ie, ih), id="ignite", marks=needs_ignite),
]


@pytest.mark.parametrize("lib", LIBS)
def test_model_checkpoint_docstring_example(lib, tmp_path):
    engine, handlers = lib
    trainer = engine.Engine(lambda engine, batch: None)
    handler = handlers.ModelCheckpoint(
        tmp_path, "myprefix", n_saved=2, create_dir=True, require_empty=False
    )
    model = nn.Linear(3, 3)
    trainer.add_event_handler(engine.Events.EPOCH_COMPLETED(every=2), handler, {"mymodel": model})
    trainer.run([0, 1, 2, 3, 4], max_epochs=6)
    files = sorted(f for f in os.listdir(tmp_path) if not f.startswith("."))
    assert files == ["myprefix_mymodel_20.pt", "myprefix_mymodel_30.pt"]
    assert str(handler.last_checkpoint) == str(tmp_path / "myprefix_mymodel_30.pt")


def test_model_checkpoint_refuses_what_it_cannot_do(tmp_path):
    with pytest.raises(ValueError, match="save_on_rank=1: distengine writes checkpoints on rank 0"):
        dh.ModelCheckpoint(tmp_path, save_on_rank=1)
    with pytest.raises(TypeError, match="torch.save options \\['pickle_protocol'\\]"):
        dh.ModelCheckpoint(tmp_path, pickle_protocol=2)
    handler = dh.ModelCheckpoint(tmp_path, require_empty=False)
    with pytest.raises(RuntimeError, match="No objects to checkpoint"):
        handler(de.Engine(lambda e, b: None), {})
    (tmp_path / "old.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="already holds"):
        dh.ModelCheckpoint(tmp_path)


def recording_handler(handlers, calls):
    class Recording(handlers.checkpoint.BaseSaveHandler):
        def __call__(self, checkpoint, filename, metadata=None):
            kept = {k: metadata[k] for k in ("basename", "score_name", "priority")}
            calls.append(("save", filename, sorted(checkpoint), kept))

        def remove(self, filename):
            calls.append(("remove", filename))

    return Recording()


@pytest.mark.parametrize("scored", [False, True], ids=["latest", "best"])
def test_a_user_save_handler_plugs_into_checkpoint(scored):
    calls = []
    saver = recording_handler(dh, calls)
    scores = iter([0.5, 0.9, 0.7, 0.95])
    trainer = de.Engine(lambda e, b: None)
    to_save = {"model": nn.Linear(2, 2), "trainer": trainer}
    checkpoint = dh.Checkpoint(
        to_save,
        saver,
        filename_prefix="run",
        n_saved=2,
        score_function=(lambda e: next(scores)) if scored else None,
        score_name="acc" if scored else None,
    )
    trainer.add_event_handler(de.Events.EPOCH_COMPLETED, checkpoint)
    trainer.run([0, 1], max_epochs=4)
    saves = [c for c in calls if c[0] == "save"]
    assert all(c[2] == ["model", "trainer"] for c in saves)
    want = [0.5, 0.9, 0.7, 0.95] if scored else [2, 4, 6, 8]
    assert [c[3] for c in saves] == [
        {"basename": "run_checkpoint", "score_name": "acc" if scored else None, "priority": p}
        for p in want
    ]
    removed = [c[1] for c in calls if c[0] == "remove"]  # the worst of the kept, each time
    assert removed == [saves[0][1], saves[2][1] if scored else saves[1][1]]


@needs_ignite
def test_ignite_gives_a_save_handler_the_same_priorities_and_removals():
    def run(engine, handlers):
        calls = []
        trainer = engine.Engine(lambda e, b: None)
        checkpoint = handlers.Checkpoint(
            {"model": nn.Linear(2, 2)}, recording_handler(handlers, calls), n_saved=2
        )
        trainer.add_event_handler(engine.Events.EPOCH_COMPLETED, checkpoint)
        trainer.run([0, 1], max_epochs=4)
        return [(c[0], c[1]) if c[0] == "remove" else (c[0], c[1], c[3]) for c in calls]

    ours, theirs = run(de, dh), run(ie, ih)
    # Ignite removes the dropped file before writing the new one, distengine after (a crash
    # mid-write then still leaves n_saved files): the same calls, in another order
    assert [c for c in ours if c[0] == "save"] == [c for c in theirs if c[0] == "save"]
    assert [c for c in ours if c[0] == "remove"] == [c for c in theirs if c[0] == "remove"]


def test_base_save_handler_is_abstract_and_disk_saver_is_one(tmp_path):
    class Incomplete(dh.BaseSaveHandler):
        def __call__(self, checkpoint, filename, metadata=None):
            pass

    with pytest.raises(TypeError, match="remove"):
        Incomplete()
    assert isinstance(dh.DiskSaver(tmp_path), dh.BaseSaveHandler)


# -------------------------------------------------------------- EarlyStopping
SCORES = [1.0, 1.05, 1.2, 1.21, 1.15, 1.3, 1.31, 1.32, 1.0, 0.9, 0.95, 0.8]


def early_stopping_trace(engine, handlers, warn_ok=False, **kwargs):
    trainer = engine.Engine(lambda e, b: None)
    scores = iter(SCORES)
    stopper = handlers.EarlyStopping(3, lambda e: next(scores), trainer, **kwargs)
    seen = []

    @trainer.on(engine.Events.EPOCH_COMPLETED)
    def check(e):
        stopper(e)
        seen.append((stopper.counter, stopper.best_score))

    trainer.run([0], max_epochs=len(SCORES))
    return trainer.state.epoch, seen, stopper.state_dict()


GRID = [
    dict(mode=mode, threshold=threshold, threshold_mode=threshold_mode, cumulative=cumulative)
    for mode, threshold, threshold_mode, cumulative in itertools.product(
        ["max", "min"], [0.0, 0.05], ["abs", "rel"], [False, True]
    )
]


@pytest.mark.parametrize("kwargs", GRID, ids=lambda k: "-".join(str(v) for v in k.values()))
def test_early_stopping_counts_and_stops_as_ignite(kwargs):
    ours = early_stopping_trace(de, dh, **kwargs)
    if ih is None:
        pytest.skip("compares with pytorch-ignite")
    assert ours == early_stopping_trace(ie, ih, **kwargs)


def test_early_stopping_threshold_documented_rule():
    # mode="max", threshold_mode="abs": improvement only above best + threshold
    epoch, seen, state = early_stopping_trace(de, dh, threshold=0.1)
    assert seen == [(0, 1.0), (1, 1.05), (0, 1.2), (1, 1.21), (2, 1.21), (3, 1.3)]
    assert state == {"counter": 3, "best_score": 1.3, "threshold_mode": "abs"} and epoch == 6
    # relative: improvement only above best * (1 + threshold)
    epoch, seen, _ = early_stopping_trace(de, dh, threshold=0.05, threshold_mode="rel")
    assert seen[:6] == [(0, 1.0), (1, 1.05), (0, 1.2), (1, 1.21), (2, 1.21), (0, 1.3)]
    assert seen[-1] == (3, 1.32) and epoch == 9


def test_early_stopping_old_argument_names_warn_and_still_work():
    trainer = de.Engine(lambda e, b: None)
    with pytest.warns(DeprecationWarning) as caught:
        stopper = dh.EarlyStopping(2, lambda e: 0.0, trainer, min_delta=0.2, cumulative_delta=True)
    assert [str(w.message).split(" is ")[0] for w in caught] == [
        "EarlyStopping's 'min_delta'",
        "EarlyStopping's 'cumulative_delta'",
    ]
    assert (stopper.threshold, stopper.cumulative) == (0.2, True)
    with pytest.raises(ValueError, match="threshold_mode must be 'abs' or 'rel', got 'pct'"):
        dh.EarlyStopping(2, lambda e: 0.0, trainer, threshold_mode="pct")
    with pytest.warns(DeprecationWarning, match="'min_delta_mode' is deprecated"):
        stopper.min_delta_mode = "rel"  # Ignite's setters too
    with pytest.warns(DeprecationWarning, match="'min_delta' is deprecated"):
        stopper.min_delta = 0.5
    assert (stopper.threshold, stopper.threshold_mode) == (0.5, "rel")


def test_early_stopping_attach_resets_with_the_trainer():
    trainer, evaluator = de.Engine(lambda e, b: None), de.Engine(lambda e, b: None)
    stopper = dh.EarlyStopping(1, lambda e: 1.0, trainer)
    stopper.attach(evaluator, reset_engine=trainer)
    trainer.add_event_handler(de.Events.EPOCH_COMPLETED, lambda: evaluator.run([0]))
    trainer.run([0], max_epochs=5)
    assert trainer.state.epoch == 2  # no improvement after the first score
    trainer.state.max_epochs = None
    trainer.run([0], max_epochs=5)  # a new run: STARTED reset the best score and counter
    assert trainer.state.epoch == 2 and torch.tensor(stopper.counter) == 1


@pytest.mark.parametrize("library", ["distengine", "ignite"])
def test_global_step_from_engine_gives_the_counter_of_the_event_as_ignite(library, tmp_path):
    # Ignite's getting-started: the best model is named by the trainer's epoch
    if library == "ignite":
        pytest.importorskip("ignite")
    engine_mod = __import__(f"{library}.engine", fromlist=["Engine"])
    handlers = __import__(f"{library}.handlers", fromlist=["ModelCheckpoint"])
    Engine, Events = engine_mod.Engine, engine_mod.Events

    trainer, evaluator = Engine(lambda e, b: None), Engine(lambda e, b: None)
    checkpoint = handlers.ModelCheckpoint(
        tmp_path,
        n_saved=1,
        filename_prefix="best",
        score_function=lambda e: trainer.state.epoch / 10,
        score_name="accuracy",
        global_step_transform=handlers.global_step_from_engine(trainer),
    )
    evaluator.add_event_handler(Events.COMPLETED, checkpoint, {"model": torch.nn.Linear(1, 1)})
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda: evaluator.run([0]))
    trainer.run(range(4), max_epochs=2)
    assert sorted(f for f in os.listdir(tmp_path) if not f.startswith(".")) == [
        "best_model_2_accuracy=0.2000.pt"
    ]
    by_iteration = handlers.global_step_from_engine(trainer, Events.ITERATION_COMPLETED)
    assert by_iteration(evaluator, Events.COMPLETED) == 8
    custom = handlers.global_step_from_engine(trainer, fallback_attr="iteration")
    assert custom(evaluator, "not an event") == 8


def test_checkpoint_fires_saved_checkpoint_after_each_save_and_keeps_the_event_for_the_rest(
    tmp_path,
):
    model = nn.Linear(2, 2)
    trainer = de.Engine(lambda e, b: None)
    trainer.register_events(*dh.CheckpointEvents)
    checkpoint = dh.Checkpoint({"model": model}, tmp_path, n_saved=1)
    saved, steps_seen_after = [], []
    trainer.add_event_handler(de.Events.EPOCH_COMPLETED, checkpoint)
    trainer.add_event_handler(
        de.Events.EPOCH_COMPLETED, lambda e: steps_seen_after.append(e.last_event_name)
    )
    trainer.on(dh.Checkpoint.SAVED_CHECKPOINT)(lambda e: saved.append(checkpoint.last_checkpoint))
    trainer.run(range(2), max_epochs=3)
    assert saved == [tmp_path / "model_2.pt", tmp_path / "model_4.pt", tmp_path / "model_6.pt"]
    assert steps_seen_after == [de.Events.EPOCH_COMPLETED] * 3
    scored = dh.Checkpoint({"model": model}, tmp_path, score_function=lambda e: {"acc": 1})
    with pytest.raises(ValueError, match="score_function should be a number, got {'acc': 1}"):
        scored(trainer)


def test_tensorboard_handlers_refuse_another_logger_and_name_histograms_as_ignite(tmp_path):
    from unittest.mock import MagicMock

    from distengine.handlers.tensorboard_logger import WeightsHistHandler

    trainer = de.Engine(lambda e, b: None)
    handler = WeightsHistHandler(nn.Linear(2, 1), whitelist=["bias"])
    with pytest.raises(
        RuntimeError, match="'WeightsHistHandler' works only with TensorboardLogger"
    ):
        handler(trainer, MagicMock(), de.Events.EPOCH_COMPLETED)
    logger = dh.TensorboardLogger(tmp_path)
    logger.writer = MagicMock()
    handler(trainer, logger, de.Events.EPOCH_COMPLETED)
    (call,) = logger.writer.add_histogram.call_args_list
    assert (call.kwargs["tag"], call.kwargs["global_step"]) == ("weights/bias", 0)


def test_logger_utils_is_ignites_module_path_of_the_setup_functions():
    from unittest.mock import MagicMock

    import distengine.handlers.logger_utils as logger_utils
    from distengine.engine import common

    assert common.setup_tb_logging is logger_utils.setup_tb_logging
    logger, trainer, evaluator = MagicMock(), de.Engine(lambda e, b: b), de.Engine(lambda e, b: b)
    logger_utils._setup_logging(logger, trainer, None, {"val": evaluator}, 10, ["loss"], ["acc"])
    calls = logger.attach_output_handler.call_args_list
    assert [(c.kwargs["tag"], c.kwargs["metric_names"]) for c in calls] == [
        ("training", ["loss"]),
        ("val", ["acc"]),
    ]
    with pytest.raises(TypeError, match="optimizers should be either a single optimizer.*'abc'"):
        logger_utils._setup_logging(logger, trainer, "abc", None, 1)
    with pytest.raises(DeprecationWarning, match="setup_any_logging is deprecated"):
        common.setup_any_logging(None, None, None, None, None, None)
    with pytest.raises(NotImplementedError, match="WandBLogger"):
        logger_utils.setup_wandb_logging(trainer)


def test_checkpoint_scores_by_score_name_alone_and_saves_on_an_exception(tmp_path):
    model = nn.Linear(2, 2)
    evaluator = de.Engine(lambda e, b: None)
    evaluator.state.metrics = {"acc": 0.5}
    evaluator.state.iteration = 3
    best = dh.Checkpoint({"model": model}, tmp_path / "best", score_name="acc", n_saved=1)
    best(evaluator)
    evaluator.state.metrics, evaluator.state.iteration = {"acc": 0.25}, 4
    best(evaluator)  # a worse score is not kept
    assert best.last_checkpoint.name == "model_3_acc=0.5000.pt"

    def crash(engine, batch):
        raise RuntimeError("training crash")

    trainer = de.Engine(crash)
    trainer.add_event_handler(
        de.Events.EXCEPTION_RAISED, dh.Checkpoint({"model": model}, tmp_path / "crash")
    )
    trainer.run([0, 0], max_epochs=1)  # the handler takes the exception, as in Ignite
    assert sorted(p.name for p in (tmp_path / "crash").glob("*.pt")) == ["model_1.pt"]
