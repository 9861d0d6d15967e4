"""The names Ignite's examples import, on distengine, compared with Ignite 0.5.5 itself.

``import distengine as ignite``, ``utils.setup_logger``, ``engine.common``,
the TensorBoard handler classes, ``Checkpoint``'s static helpers and dicts of
metrics in ``to_save``, ``GpuInfo``, and ``idist.Parallel`` with the rest of
Ignite's ``idist`` names. Where Ignite is the reference, both run the same
code and record the same calls.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

import distengine
import distengine.distributed as idist
from distengine.engine import Engine, Events, common
from distengine.handlers import Checkpoint, TensorboardLogger
from distengine.handlers.tensorboard_logger import (
    GradsHistHandler,
    GradsScalarHandler,
    OptimizerParamsHandler,
    OutputHandler,
    WeightsHistHandler,
    WeightsScalarHandler,
)
from distengine.metrics import Accuracy, GpuInfo, Loss
from tests.ignite_compat import parallel_fns

ignite = pytest.importorskip("ignite")


def test_import_distengine_as_ignite():
    import distengine as ignite_like

    assert ignite_like.__version__ == distengine.__version__
    assert ignite_like.distributed is idist and ignite_like.engine.Engine is Engine
    assert ignite_like.handlers.Checkpoint is Checkpoint
    with pytest.raises(AttributeError, match="contrib"):
        ignite_like.contrib  # noqa: B018


def test_setup_logger_from_utils_is_the_handlers_one_with_ignites_keywords():
    from distengine.handlers import setup_logger
    from distengine.utils import setup_logger as from_utils

    assert from_utils is setup_logger
    out = io.StringIO()
    logger = from_utils("ignite-style", stream=out, format="%(levelname)s|%(message)s")
    logger.info("hello")
    assert out.getvalue() == "INFO|hello\n"
    assert from_utils("ignite-style", reset=False, format="other") is logger  # kept as it was
    logger.info("again")
    assert out.getvalue().endswith("INFO|again\n")
    quiet = io.StringIO()
    from_utils("other-rank", stream=quiet, distributed_rank=1).info("not shown")
    assert quiet.getvalue() == ""


def test_checkpoint_static_helpers_equal_ignites():
    from ignite.handlers import Checkpoint as IgniteCheckpoint

    flags = [(p, s, n, g) for p in (0, 1) for s in (0, 1) for n in (0, 1) for g in (0, 1)]
    for with_prefix, with_score, with_score_name, with_step in flags:
        args = dict(with_prefix=bool(with_prefix), with_score=bool(with_score))
        args.update(with_score_name=bool(with_score_name), with_global_step=bool(with_step))
        try:
            theirs = IgniteCheckpoint.setup_filename_pattern(**args)
        except ValueError:
            with pytest.raises(ValueError):
                Checkpoint.setup_filename_pattern(**args)
            continue
        assert Checkpoint.setup_filename_pattern(**args) == theirs, args
    engine = Engine(lambda e, b: None)
    engine.state.metrics["loss"] = 0.25
    assert Checkpoint.get_default_score_fn("loss", -1.0)(engine) == -0.25
    with pytest.raises(ValueError, match="score_sign"):
        Checkpoint.get_default_score_fn("loss", 0.5)
    with pytest.raises(KeyError, match="'accuracy' is not in the engine's metrics"):
        Checkpoint.get_default_score_fn("accuracy")(engine)


def _metrics_after(batches):
    metrics = {"accuracy": Accuracy(), "nll": Loss(nn.CrossEntropyLoss())}
    for metric in metrics.values():
        metric.reset()
        for y_pred, y in batches:
            metric.update((y_pred, y))
    return metrics


def test_to_save_holds_a_dict_of_metrics(tmp_path):
    """As mnist_save_resume_engine.py saves ``"metrics": {"accuracy": Accuracy(), ...}``."""
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(8, 3, generator=g), torch.randint(0, 3, (8,), generator=g))] * 2
    saved = _metrics_after(batches)
    model = nn.Linear(2, 2)
    checkpoint = Checkpoint({"model": model, "metrics": saved}, tmp_path)
    checkpoint(Engine(lambda e, b: None))
    loaded = torch.load(checkpoint.last_checkpoint, weights_only=True)  # torch's default load
    fresh = _metrics_after([])
    Checkpoint.load_objects({"model": nn.Linear(2, 2), "metrics": fresh}, loaded)
    for name, metric in fresh.items():
        assert metric.compute() == pytest.approx(saved[name].compute()), name
    with pytest.raises(KeyError, match="top5"):
        Checkpoint.load_objects({"metrics": {"top5": Accuracy()}}, loaded)
    with pytest.raises(TypeError, match=r"to_save\['metrics'\]\['count'\] is a int"):
        Checkpoint({"metrics": {"count": 3}}, tmp_path)


def _save_and_load_per_rank(folder):
    rank = idist.get_rank()
    y = torch.tensor([0, 1, 1, 0])
    y_pred = torch.eye(2)[torch.tensor([0, 1, 1, 0] if rank == 0 else [1, 0, 1, 0])]
    metrics = {"accuracy": Accuracy()}
    metrics["accuracy"].update((y_pred, y))
    checkpoint = Checkpoint({"metrics": metrics}, folder)
    checkpoint(Engine(lambda e, b: None))
    idist.barrier()
    fresh = {"accuracy": Accuracy()}
    Checkpoint.load_objects({"metrics": fresh}, checkpoint.last_checkpoint)
    return fresh["accuracy"].state_dict()["correct"].item(), fresh["accuracy"].compute()


def test_a_dict_of_metrics_is_saved_and_loaded_per_rank(ranks2, tmp_path):
    (correct0, acc0), (correct1, acc1) = ranks2.run(_save_and_load_per_rank, str(tmp_path))
    assert (correct0, correct1) == (4, 2)  # each rank its own accumulation back
    assert acc0 == acc1 == pytest.approx(6 / 8)  # reduced across ranks, as before the save


class Recorder:
    """A SummaryWriter stand-in that records what handlers write."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def add_scalar(self, tag, value, global_step=None):
        self.calls.append(("scalar", tag, round(float(value), 5), global_step))

    def add_histogram(self, tag, values, global_step=None):
        total = round(float(torch.as_tensor(values).double().sum()), 4)
        self.calls.append(("hist", tag, total, global_step))

    def close(self):
        pass


def _train_with_tb_handlers(engine_cls, events, logger, handlers_module):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    data = [(torch.randn(5, 4), torch.randint(0, 2, (5,))) for _ in range(4)]

    def step(engine, batch):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(batch[0]), batch[1])
        loss.backward()
        optimizer.step()
        return {"loss": loss.item(), "vector": torch.tensor([1.0, 2.0]), "nested": {"a": [3, 4]}}

    trainer = engine_cls(step)
    trainer.state.alpha = 0.5
    h = handlers_module
    logger.writer = Recorder()
    every2 = events.ITERATION_COMPLETED(every=2)
    logger.attach(
        trainer,
        h.OutputHandler("train", output_transform=lambda o: o, state_attributes=["alpha"]),
        every2,
    )
    logger.attach(trainer, h.OptimizerParamsHandler(optimizer, tag="opt"), events.ITERATION_STARTED)
    logger.attach(trainer, h.WeightsScalarHandler(model, whitelist=["0."]), every2)
    logger.attach(trainer, h.WeightsHistHandler(model, tag="w"), events.EPOCH_COMPLETED)
    logger.attach(trainer, h.GradsScalarHandler(model, reduction=torch.sum), every2)
    bias = h.GradsHistHandler(model, whitelist=lambda n, p: "bias" in n)
    logger.attach(trainer, bias, events.EPOCH_COMPLETED)
    logger.attach_output_handler(trainer, events.EPOCH_COMPLETED, "epoch", metric_names="all")
    trainer.run(data, max_epochs=2)
    return logger.writer.calls


def test_tensorboard_handler_classes_write_what_ignites_write(tmp_path):
    import ignite.engine as ie
    import ignite.handlers.tensorboard_logger as itb

    from distengine.handlers import tensorboard_logger as dtb

    theirs = _train_with_tb_handlers(
        ie.Engine, ie.Events, itb.TensorboardLogger(log_dir=tmp_path / "ignite"), itb
    )
    mine = _train_with_tb_handlers(Engine, Events, TensorboardLogger(tmp_path / "mine"), dtb)
    assert mine == theirs
    tags = {call[1] for call in mine}
    assert {"train/vector/1", "train/nested/a/0", "train/alpha", "opt/lr/group_0"} <= tags
    assert {"weights_norm/0/weight", "w/weights/2/bias", "grads_sum/2/weight"} <= tags
    assert {"grads/0/bias", "grads/2/bias"} == {t for t in tags if t.startswith("grads/")}


def test_tensorboard_logger_keeps_the_callable_form_and_checks_handlers(tmp_path):
    trainer = Engine(lambda e, b: 1.0)
    with TensorboardLogger(tmp_path) as tb:
        tb.writer = Recorder()
        tb.attach(trainer, lambda e, writer, event: writer.add_scalar("x", 2.0, 7), Events.STARTED)
        handle = tb.attach(
            trainer, OutputHandler("t", output_transform=lambda o: o), Events.STARTED
        )
        handle.remove()
        trainer.run([0], max_epochs=1)
        assert tb.writer.calls == [("scalar", "x", 2.0, 7)]
    with pytest.raises(ValueError, match="nothing to log"):
        OutputHandler("t")
    with pytest.raises(TypeError, match="metric_names"):
        OutputHandler("t", metric_names="loss")
    with pytest.raises(TypeError, match="scalar"):
        WeightsScalarHandler(nn.Linear(2, 2), reduction=lambda t: t)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        GradsHistHandler("model")
    with pytest.raises(TypeError, match="param_groups"):
        OptimizerParamsHandler(object())
    assert WeightsHistHandler(nn.Linear(2, 2), whitelist=["bias"]).weights[0][0] == "bias"
    assert GradsScalarHandler(nn.Linear(2, 2)).every_rank() is False


def _tb_on_every_rank(folder):
    model = nn.Linear(2, 2)
    trainer = Engine(lambda e, b: 1.0)
    tb = TensorboardLogger(Path(folder, f"tb{idist.get_rank()}"))
    handle = tb.attach(trainer, WeightsScalarHandler(model), Events.ITERATION_COMPLETED)
    handle.remove()  # a handle on every rank
    tb.attach(trainer, WeightsHistHandler(model), Events.ITERATION_COMPLETED)
    tb.attach_output_handler(trainer, Events.ITERATION_COMPLETED, "t", output_transform=lambda o: o)
    trainer.run([0, 1], max_epochs=1)
    tb.close()
    idist.barrier()
    return sorted(p.name for p in Path(folder).iterdir())


def test_tensorboard_handlers_write_on_rank_zero_only(ranks2, tmp_path):
    assert ranks2.run(_tb_on_every_rank, str(tmp_path)) == [["tb0"], ["tb0"]]


def _same_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.pt"))


def _best_models_and_early_stop(engine_mod, common_mod, folder, scores):
    trainer = engine_mod.Engine(lambda e, b: None)
    evaluator = engine_mod.Engine(lambda e, b: None)
    model = nn.Linear(2, 2)
    evaluator.add_event_handler(
        engine_mod.Events.COMPLETED,
        lambda e: e.state.metrics.update(Accuracy=scores[trainer.state.epoch - 1]),
    )
    common_mod.save_best_model_by_val_score(folder, evaluator, model, "Accuracy", 2, trainer)
    common_mod.add_early_stopping_by_val_score(2, evaluator, trainer, "Accuracy")
    trainer.add_event_handler(engine_mod.Events.EPOCH_COMPLETED, lambda _: evaluator.run([0]))
    trainer.run([0, 1], max_epochs=len(scores))
    return trainer.state.epoch, _same_files(folder)


def test_best_models_and_early_stopping_as_ignites(tmp_path):
    import ignite.contrib.engines.common as icommon
    import ignite.engine as ie

    scores = [0.5, 0.7, 0.6, 0.65, 0.69, 0.9]  # no gain over 0.7 twice: stop after epoch 4
    theirs = _best_models_and_early_stop(ie, icommon, tmp_path / "ignite", scores)
    mine = _best_models_and_early_stop(distengine.engine, common, tmp_path / "mine", scores)
    assert (
        mine
        == theirs
        == (4, ["best_model_2_val_accuracy=0.7000.pt", "best_model_4_val_accuracy=0.6500.pt"])
    )


def _common_training(engine_mod, common_mod, folder):
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    data = [torch.full((1,), float(i)) for i in range(4)]

    def step(engine, batch):
        optimizer.step()
        return {"loss": batch.item(), "acc": 1.0}

    trainer = engine_mod.Engine(step)
    common_mod.setup_common_training_handlers(
        trainer,
        to_save={"model": model, "optimizer": optimizer},
        save_every_iters=3,
        output_path=str(folder),
        lr_scheduler=scheduler,
        output_names=["loss", "acc"],
        with_pbars=False,
        n_saved=2,
    )
    recorder = Recorder()
    tb = common_mod.setup_tb_logging(str(folder / "tb"), trainer, optimizer, log_every_iters=2)
    tb.writer = recorder
    trainer.run(data, max_epochs=2)
    metrics = {k: round(v, 5) for k, v in trainer.state.metrics.items()}
    return _same_files(folder), optimizer.param_groups[0]["lr"], metrics, recorder.calls


def test_setup_common_training_handlers_and_tb_logging_as_ignites(tmp_path):
    import ignite.contrib.engines.common as icommon
    import ignite.engine as ie

    theirs = _common_training(ie, icommon, tmp_path / "ignite")
    mine = _common_training(distengine.engine, common, tmp_path / "mine")
    assert mine == theirs
    assert mine[0] == ["training_checkpoint_3.pt", "training_checkpoint_6.pt"]
    with pytest.raises(ValueError, match="not both"):
        common.setup_common_training_handlers(
            Engine(lambda e, b: 0), output_path=".", save_handler=print
        )
    with pytest.raises(ValueError, match="output_path or save_handler"):
        common.setup_common_training_handlers(
            Engine(lambda e, b: 0), to_save={"m": nn.Linear(1, 1)}
        )
    with pytest.raises(NotImplementedError, match="VisdomLogger"):
        common.setup_visdom_logging("out", Engine(lambda e, b: 0))


def test_stop_on_nan_terminates_the_trainer():
    def step(engine, batch):
        time.sleep(0.002)
        return {"loss": float("nan") if batch == 2 else 1.0}

    trainer = Engine(step)
    common.setup_common_training_handlers(trainer, with_pbars=False, output_names=["loss"])
    trainer.run(range(1000), max_epochs=1)
    assert trainer.state.terminated_on_nan and trainer.state.iteration < 1000


def test_gpu_info_needs_a_gpu():
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="GPU"):
            GpuInfo()
        return
    trainer = Engine(lambda e, b: None)
    GpuInfo().attach(trainer, name="gpu")
    trainer.run([0], max_epochs=1)
    index = idist.device().index or 0
    assert 0 <= trainer.state.metrics[f"gpu:{index} mem(%)"] <= 100


def test_idist_has_ignites_names():
    import ignite.distributed as ignite_idist

    missing = sorted(set(ignite_idist.utils.__all__) - set(dir(idist)))
    assert missing == ["all_gather_tensors_with_shapes", "registered_computation_models"]
    assert idist.model_name() == "serial" and idist.sync() is None
    assert idist.has_native_dist_support and "gloo" in idist.available_backends()
    assert idist.hostname() and idist.new_group([0]) is None


def test_show_config_logs_the_configuration(capsys):
    idist.show_config()
    shown = capsys.readouterr().out
    for line in ("distributed configuration: serial", "world size: 1", "num nodes: 1"):
        assert line in shown


def test_parallel_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="need a backend"):
        idist.Parallel(nproc_per_node=2)
    with pytest.raises(ValueError, match="backend must be one of"):
        idist.Parallel(backend="mpi-xyz")
    with pytest.raises(ValueError, match="nproc_per_node must be a positive int"):
        idist.Parallel(backend="gloo", nproc_per_node=0)
    with pytest.raises(ValueError, match="needs node_rank"):
        idist.Parallel(backend="gloo", nproc_per_node=2, nnodes=2)
    with pytest.raises(ValueError, match="master_addr and master_port"):
        idist.Parallel(backend="gloo", nproc_per_node=2, nnodes=2, node_rank=1)


def test_parallel_without_a_launcher_runs_here():
    seen = []
    with idist.Parallel(backend="gloo") as parallel:
        parallel.run(lambda local_rank, x: seen.append((local_rank, x, idist.backend())), 3)
    assert seen == [(0, 3, None)]


def test_parallel_spawns_ranks_and_raises_their_errors(tmp_path):
    with idist.Parallel(backend="gloo", nproc_per_node=2) as parallel:
        parallel.run(parallel_fns.report, str(tmp_path), scale=2.0)
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [(s["rank"], s["local_rank"], s["world_size"]) for s in seen] == [(0, 0, 2), (1, 1, 2)]
    assert {s["backend"] for s in seen} == {"gloo"} and {s["sum"] for s in seen} == {6.0}
    assert {s["model_name"] for s in seen} == {"native-dist"}
    with pytest.raises(mp.ProcessRaisedException, match="rank 1 could not") as raised:
        with idist.Parallel(backend="gloo", nproc_per_node=2) as parallel:
            parallel.run(parallel_fns.fail_on_rank_1)
    message = str(raised.value)  # the cause first, whichever exit torch noticed first
    assert message.index("rank 1 could not") < message.find("then rank 0") or (
        "then rank 0" not in message
    )


def _inside_a_job(folder):
    refused = None
    try:
        idist.Parallel(backend="gloo", nproc_per_node=2)
    except ValueError as error:
        refused = str(error)
    seen = []
    with idist.Parallel(backend="gloo") as parallel:
        parallel.run(lambda local_rank: seen.append((local_rank, idist.get_world_size())))
    with idist.one_rank_first(local=True):
        first = not Path(folder, "first").exists()
        Path(folder, "first").touch()
    return refused, seen, first, idist.is_distributed()


def test_parallel_inside_a_job_joins_it(ranks2, tmp_path):
    (refused, seen0, first0, kept0), (_, seen1, first1, kept1) = ranks2.run(
        _inside_a_job, str(tmp_path)
    )
    assert "already one of 2 ranks" in refused and "drop nproc_per_node" in refused
    assert seen0 == [(0, 2)] and seen1 == [(1, 2)]
    assert (first0, first1) == (True, False)  # local rank 0 went first
    assert kept0 and kept1  # the job's own process group is left alone


def test_one_rank_only_and_one_rank_first_check_their_rank():
    assert idist.one_rank_only()(lambda: 5)() == 5
    assert idist.one_rank_only(rank=1)(lambda: 5)() is None
    with pytest.raises(ValueError, match="rank must be a local rank in"):
        with idist.one_rank_first(rank=2, local=True):
            pass


def _fsdp_weight_norms(folder):
    torch.manual_seed(0)
    model = idist.auto_model(nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2)), strategy="fsdp")
    trainer = Engine(lambda e, b: None)
    tb = TensorboardLogger(folder)
    if idist.get_rank() == 0:
        tb.writer = Recorder()
    handler = WeightsScalarHandler(model)
    tb.attach(trainer, handler, Events.COMPLETED)
    tb.attach(trainer, WeightsHistHandler(model, whitelist=["1."]), Events.COMPLETED)
    trainer.run([0], max_epochs=1)
    whole = {
        n.replace(".", "/"): p.full_tensor().norm().item() for n, p in model.named_parameters()
    }
    calls = tb.writer.calls if idist.get_rank() == 0 else None
    return handler.every_rank(), calls, whole


def test_weights_handlers_measure_sharded_parameters_whole(ranks2, tmp_path):
    (every0, calls, whole), (every1, _, _) = ranks2.run(_fsdp_weight_norms, str(tmp_path))
    assert every0 and every1  # run on every rank: gathering a shard is a collective
    norms = {tag: value for kind, tag, value, _ in calls if kind == "scalar"}
    assert norms == {f"weights_norm/{n}": pytest.approx(v, abs=1e-5) for n, v in whole.items()}
    assert {tag for kind, tag, _, _ in calls if kind == "hist"} == {
        "weights/1/weight",
        "weights/1/bias",
    }
