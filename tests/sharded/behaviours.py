"""What FSDP changes in the library, run on every rank of a pool: one function per behaviour.

``on_two_ranks`` runs them all in one pool call and returns rank-wise
results; rank 0 also writes TensorBoard events the test reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

import distengine.distributed as idist
import distengine.distributed.auto as auto
from distengine.distributed.sharding import is_fsdp_module
from distengine.engine import Engine, Events, create_supervised_evaluator, create_supervised_trainer
from distengine.handlers import Checkpoint, DiskSaver, TensorboardLogger
from distengine.metrics import Accuracy
from tests.sharded.common import TinyTransformer, full_state
from tests.sharded.trainer_run import dataset, loss_fn


def error_of(fn) -> str | None:
    try:
        fn()
    except (ValueError, TypeError, RuntimeError) as error:
        return f"{type(error).__name__}: {error}"
    return None


def accumulation_loader():
    data = dataset()
    return idist.auto_dataloader(data, batch_size=6, shuffle=False, drop_last=True, split="even")


def accumulate_and_clip(shard: bool = True) -> dict[str, Any]:
    """6 iterations, windows of 2, clipping at 0.5; a save attempt inside the second window."""
    torch.manual_seed(0)
    model = TinyTransformer()
    if shard:
        model = idist.auto_model(model, strategy="fsdp")
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    trainer = create_supervised_trainer(
        model, opt, loss_fn, gradient_accumulation_steps=2, clip_grad_norm=0.5
    )
    refused = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED(once=3), lambda e: refused.append(error_of(e.state_dict))
    )
    trainer.run(accumulation_loader(), max_epochs=1)
    weights = full_state(model, opt).get("model") if shard else dict(model.state_dict())
    return {"model": weights, "refused": refused[0]}


def optimizer_before_sharding() -> list[str | None]:
    model = TinyTransformer()
    early = torch.optim.SGD(model.parameters(), lr=0.1)
    model = idist.auto_model(model, strategy="fsdp")
    return [
        error_of(lambda: idist.auto_optim(early)),
        error_of(lambda: create_supervised_trainer(model, early, loss_fn)),
        error_of(lambda: idist.auto_optim(torch.optim.SGD(model.parameters(), lr=0.1))),
    ]


def single_file_refusals(folder: str) -> list[str | None]:
    model = idist.auto_model(TinyTransformer(), strategy="fsdp")
    saver = DiskSaver(Path(folder, "one_file"), require_empty=False)
    engine = Engine(lambda e, b: None)
    engine.state.iteration = 1
    handler = Checkpoint({"model": model}, lambda checkpoint, name: None)
    return [
        error_of(lambda: saver({"model": model.state_dict()}, "model.pt")),
        error_of(lambda: handler(engine)),
        str(sorted(p.name for p in Path(folder, "one_file").iterdir())),
    ]


def evaluate_uneven_shards() -> list[tuple[float, float]]:
    """Exact shards of 3 samples (2 batches on rank 0, 1 on rank 1) and of 1 (rank 1: none)."""
    torch.manual_seed(0)
    model = idist.auto_model(
        nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)), strategy="fsdp"
    )
    full = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    state = full_state(model, torch.optim.SGD(model.parameters(), lr=0))
    if state:
        full.load_state_dict(state["model"])
    found = []
    for n in (3, 1, 3):  # twice the same evaluator shape: its counts restart each run
        g = torch.Generator().manual_seed(n)
        x, y = torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)
        loader = idist.auto_dataloader(TensorDataset(x, y), batch_size=2)
        evaluator = create_supervised_evaluator(model, {"accuracy": Accuracy()})
        evaluator.run(loader)
        expected = (full(x).argmax(1) == y).double().mean().item()
        found.append((evaluator.state.metrics["accuracy"], expected))
    return found


class TwoInputs(nn.Module):
    """Called as ``model(x, scale)``; its BatchNorm statistics show a forward in train mode."""

    def __init__(self) -> None:
        super().__init__()
        self.norm, self.head = nn.BatchNorm1d(4), nn.Linear(4, 3)

    def forward(self, x: torch.Tensor, scale: float) -> torch.Tensor:
        return self.head(self.norm(x * scale))


def evaluate_with_model_fn() -> list[Any]:
    """A model_fn evaluator on shards of 3 samples (rank 1: one batch fewer) and of 1 (rank 1:
    none, the model left in train mode): the padding forwards call the model as model_fn does."""
    torch.manual_seed(0)
    model = idist.auto_model(TwoInputs(), strategy="fsdp")
    found = []
    for n in (3, 1):
        model.train()
        g = torch.Generator().manual_seed(n)
        x, y = torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g)
        loader = idist.auto_dataloader(TensorDataset(x, y), batch_size=2)
        evaluator = create_supervised_evaluator(
            model, {"accuracy": Accuracy()}, model_fn=lambda m, x: m(x, 2.0)
        )
        evaluator.run(loader)
        found.append(evaluator.state.metrics["accuracy"])
    found.append(model.norm.running_mean.tolist())  # untouched by evaluation on every rank
    return found


def log_weight_norms(folder: str) -> dict[str, float]:
    torch.manual_seed(0)
    model = idist.auto_model(TinyTransformer(), strategy="fsdp")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = create_supervised_trainer(model, opt, loss_fn)
    tb = TensorboardLogger(Path(folder, "tb"))
    tb.attach_weights_handler(trainer, Events.COMPLETED, model)
    tb.attach_weights_handler(trainer, Events.COMPLETED, model, kind="histogram")
    trainer.run(accumulation_loader(), max_epochs=1)
    tb.close()
    full = full_state(model, opt)
    return {k: v.norm().item() for k, v in full.get("model", {}).items()}


def auto_strategy() -> list[str]:
    chosen = [type(idist.auto_model(nn.Linear(4, 2), strategy="auto")).__name__]
    share, auto.AUTO_FSDP_SHARE = auto.AUTO_FSDP_SHARE, 0.0  # any model is "too big"
    try:
        model = idist.auto_model(nn.Linear(4, 2), strategy="auto")
        chosen.append("fsdp" if is_fsdp_module(model) else type(model).__name__)
    finally:
        auto.AUTO_FSDP_SHARE = share
    return chosen


def load_one_file_into_shards(path: str) -> dict[str, Any]:
    """A checkpoint file of one process, loaded into sharded objects on every rank."""
    torch.manual_seed(1)  # other initial weights: the load must replace them all
    model = idist.auto_model(TinyTransformer(), strategy="fsdp")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    trainer = create_supervised_trainer(model, opt, loss_fn)
    Checkpoint.load_objects({"model": model, "optimizer": opt, "trainer": trainer}, path)
    return {**full_state(model, opt), "iteration": trainer.state.iteration}


def on_two_ranks(folder: str, one_file: str) -> dict[str, Any]:
    return {
        "accumulate": accumulate_and_clip(),
        "optimizer": optimizer_before_sharding(),
        "single_file": single_file_refusals(folder),
        "evaluate": evaluate_uneven_shards(),
        "model_fn": evaluate_with_model_fn(),
        "norms": log_weight_norms(folder),
        "auto": auto_strategy(),
        "one_file": load_one_file_into_shards(one_file),
    }
