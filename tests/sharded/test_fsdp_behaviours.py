"""What FSDP changes in the library: training step, refusals, evaluation, logging, loading.

The 2-rank behaviours run in one pool call (``behaviours.on_two_ranks``);
single-process checks (rules, merges, bad input) run here.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import distengine.distributed as idist
from distengine.engine import Engine, create_supervised_trainer
from distengine.handlers import Checkpoint
from distengine.metrics import Metric
from tests.sharded.behaviours import accumulate_and_clip, on_two_ranks
from tests.sharded.common import TinyTransformer, differences
from tests.sharded.trainer_run import dataset, loss_fn


@pytest.fixture(scope="module")
def one_file(tmp_path_factory) -> tuple[Path, dict]:
    """A one-process checkpoint file after 3 AdamW steps, and its state keyed by name."""
    folder = tmp_path_factory.mktemp("one_file")
    torch.manual_seed(0)
    model = TinyTransformer()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    trainer = create_supervised_trainer(model, opt, loss_fn)
    loader = idist.auto_dataloader(dataset(), batch_size=6, shuffle=True, drop_last=True)
    trainer.run(loader, max_iters=3)
    checkpoint = Checkpoint({"model": model, "optimizer": opt, "trainer": trainer}, folder)
    checkpoint(trainer)
    names = [name for name, _ in model.named_parameters()]
    saved = opt.state_dict()
    optim = {names[i]: state for i, state in saved["state"].items()}
    return checkpoint.last_checkpoint, {"model": dict(model.state_dict()), "optim": optim}


@pytest.fixture(scope="module")
def two_ranks(pools, tmp_path_factory, one_file) -> tuple[Path, list[dict]]:
    folder = tmp_path_factory.mktemp("behaviours")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = pools.get(2).run(on_two_ranks, str(folder), str(one_file[0]), timeout=180)
    return folder, results


def test_accumulation_and_clipping_match_one_process_and_mid_window_saves_are_refused(two_ranks):
    _, results = two_ranks
    expected = accumulate_and_clip(shard=False)  # one process, whole global batches
    assert differences(results[0]["accumulate"]["model"], expected["model"], atol=1e-6) == []
    for found in results:
        refused = found["accumulate"]["refused"]
        assert refused.startswith("ValueError: cannot save the training step at iteration 3, ")
        assert "inside a gradient-accumulation window of 2 iterations" in refused
        assert "Events.ITERATION_COMPLETED(every=2)" in refused
    assert expected["refused"] is None  # a plain model's pending gradients are saved


def test_an_optimizer_built_before_sharding_is_refused(two_ranks):
    _, results = two_ranks
    for before_auto_optim, before_trainer, after in (r["optimizer"] for r in results):
        for refused in (before_auto_optim, before_trainer):
            assert "holds parameters that sharding replaced" in refused
            assert "optimizer = Adam(model.parameters())" in refused
        assert after is None


def test_sharded_state_is_never_written_to_one_file(two_ranks):
    folder, results = two_ranks
    for disk_saver, custom_handler, left in (r["single_file"] for r in results):
        assert disk_saver.startswith("ValueError: checkpoint entry 'model' holds DTensor shards")
        assert "would hold rank 0's shard only, so it was not written" in disk_saver
        assert "Checkpoint(to_save, folder)" in disk_saver
        assert "to_save holds sharded (DTensor) state" in custom_handler
        assert left == "[]"
    assert not (folder / "one_file" / "model.pt").exists()


def test_evaluation_on_uneven_and_empty_shards_neither_hangs_nor_miscounts(two_ranks):
    _, results = two_ranks
    for i, (value, expected) in enumerate(results[0]["evaluate"]):
        assert value == pytest.approx(expected, abs=1e-12)
        assert results[1]["evaluate"][i][0] == value  # every rank holds the same value


def test_padding_forwards_call_the_model_as_the_evaluators_model_fn_does(two_ranks):
    _, results = two_ranks
    assert results[0]["model_fn"] == results[1]["model_fn"]
    assert results[0]["model_fn"][-1] == [0.0, 0.0, 0.0, 0.0]


def test_weight_norms_of_sharded_parameters_are_those_of_the_full_tensors(two_ranks):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder, results = two_ranks
    norms = results[0]["norms"]
    events = EventAccumulator(str(folder / "tb"), size_guidance={"histograms": 0})
    events.Reload()
    logged = {t.split("/", 1)[1]: events.Scalars(t)[-1].value for t in events.Tags()["scalars"]}
    assert set(logged) >= {name.replace(".", "/") for name in norms}
    for name, norm in norms.items():
        assert logged[name.replace(".", "/")] == pytest.approx(norm, rel=1e-5), name
    histograms = events.Tags()["histograms"]
    full = TinyTransformer().state_dict()
    assert len(histograms) == len(norms)
    for tag in histograms:
        name = tag.split("/", 1)[1].replace("/", ".")
        assert events.Histograms(tag)[-1].histogram_value.num == full[name].numel()


def test_auto_strategy_shards_only_what_would_not_fit(two_ranks):
    _, results = two_ranks
    assert [r["auto"] for r in results] == [["DistributedDataParallel", "fsdp"]] * 2
    assert isinstance(idist.auto_model(nn.Linear(2, 2), strategy="auto"), nn.Linear)  # one rank


def test_a_one_file_checkpoint_loads_into_sharded_objects_exactly(two_ranks, one_file):
    _, results = two_ranks
    _, saved = one_file
    loaded = results[0]["one_file"]
    assert differences(loaded["model"], saved["model"]) == []
    assert differences(loaded["optim"]["state"], saved["optim"]) == []
    assert [r["one_file"]["iteration"] for r in results] == [3, 3]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"strategy": "zero"}, "strategy must be one of ('ddp', 'fsdp', 'auto'), got 'zero'"),
        ({"strategy": "fsdp", "find_unused_parameters": True}, "are DistributedDataParallel"),
        ({"mp_dtype": "bf16"}, "['mp_dtype'] apply to strategy='fsdp', not 'ddp'"),
        ({"strategy": "auto", "cpu_offload": True}, "['cpu_offload'] apply to strategy='fsdp'"),
    ],
)
def test_auto_model_rejects_arguments_of_the_other_strategy(kwargs, message):
    with pytest.raises(ValueError) as refused:
        idist.auto_model(nn.Linear(2, 2), **kwargs)
    assert message in str(refused.value)


class Tally(Metric):
    """One state of each reduction."""

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", torch.tensor(0.0))
        self.add_state("top", torch.tensor(float("-inf")), reduce="max")
        self.add_state("seen", reduce="cat")

    def update(self, output) -> None:
        self.total += output.sum()
        self.top = torch.maximum(self.top, output.max())
        self.seen.append(output)

    def compute(self):
        return self.total.item()


@pytest.mark.parametrize("rank", [0, 1])
def test_metric_states_of_n_ranks_merge_onto_m_keeping_the_reduced_value(monkeypatch, rank):
    saved = []
    for values in ([1.0, -2.0], [5.0], [-1.0]):  # three ranks' accumulations
        metric = Tally()
        metric.update(torch.tensor(values))
        saved.append(metric.state_dict())
    monkeypatch.setattr("distengine.metrics.metric.get_rank", lambda: rank)
    resumed = Tally()
    resumed.load_per_rank_state_dicts(saved)
    state = resumed.state_dict()
    found = (state["total"].item(), state["top"].item(), [t.tolist() for t in state["seen"]])
    expected = (3.0, 5.0, [[1.0, -2.0], [5.0], [-1.0]]) if rank == 0 else (0.0, 5.0, [])
    assert found == expected  # rank 0 holds the sums and lists; the max is shared


def engine_state(iteration: int, pending: bool = False) -> dict:
    model = nn.Linear(2, 1)
    step = create_supervised_trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), loss_fn)
    state = step.state_dict()
    state.update(iteration=iteration, max_epochs=1)
    state["process_function"]["pending_grads"] = [torch.zeros(1, 2)] if pending else None
    return state


@pytest.mark.parametrize(
    "states, message",
    [
        ([engine_state(4), engine_state(5)], "the saved ranks disagree on iteration"),
        ([engine_state(4, pending=True)] * 2, "inside a gradient-accumulation window"),
    ],
    ids=["disagreeing", "mid-window"],
)
def test_engine_states_that_cannot_move_to_another_world_size_are_refused(states, message):
    model = nn.Linear(2, 1)
    trainer = create_supervised_trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), loss_fn)
    with pytest.raises(ValueError, match=message):
        trainer.load_per_rank_state_dicts(states)


def test_per_rank_state_without_a_merge_rule_is_refused_by_name():
    class Mine:
        checkpoint_per_rank = True

        def state_dict(self):
            return {}

        def load_state_dict(self, state):
            pass

    trainer = Engine(lambda e, b: None)
    trainer.register_stateful("mine", Mine())
    states = [{"iteration": 1, "epoch": 1, "max_epochs": 1, "rng": {}, "mine": {}}] * 2
    with pytest.raises(ValueError, match="engine state 'mine' .Mine. differs per rank"):
        trainer.load_per_rank_state_dicts(states)
