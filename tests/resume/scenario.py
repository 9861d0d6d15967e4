"""One small training run per configuration, stopped, saved, resumed and compared bitwise.

Every function here runs on each rank of a pool (or in the test process for
world size 1). A run trains a dropout MLP with Adam on randomly augmented
data for 3 epochs of 7 iterations per rank. For each stop iteration the run is
stopped there, every object's state goes through ``torch.save`` and
``torch.load(weights_only=True)``, the global generators are scrambled (a new
process would have others), fresh objects (model, optimizer, loader, engine)
load the states and the run goes on. Losses per iteration, metric values per
epoch, and the final weights, optimizer and scheduler states must equal those
of the uninterrupted run bit for bit.
"""

from __future__ import annotations

import io
import multiprocessing
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset, get_worker_info

import distengine.distributed as idist
from distengine.engine import Engine, Events, create_supervised_trainer
from distengine.handlers import LRScheduler
from distengine.metrics import Accuracy, Average, Loss

CONFIGS = (
    "plain",
    "bf16",
    "fp16_scaler",
    "accumulation",
    "generator",
    "workers",
    "scheduler",
    "metrics",
    "iterable",
    "iterable_workers",
)
EPOCHS, PER_RANK_BATCH, ITERS_PER_EPOCH = 3, 4, 7
#: mid-epoch and mid-window (2, 5 with 3-step windows), an epoch's last iteration (7),
#: mid-window in epoch 2 (12), a window's end in epoch 3 (18)
STOPS = (2, 5, 7, 12, 18)
#: on several ranks (slower), one stop of each kind
RANK_STOPS = (5, 7, 12)


def noise() -> torch.Tensor:
    """Augmentation that draws from torch's, Python's and NumPy's global generators."""
    return 0.1 * torch.randn(6) + 0.01 * random.random() + 0.01 * float(np.random.rand())


def features(i: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(i)
    x = torch.randn(6, generator=g)
    return x, (x[:2].sum() > 0).long() + (x[2] > 1).long()


class Noisy(Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        x, y = features(i)
        return x + noise(), y


class NoisyStream(IterableDataset):
    """An iterable dataset without len; with workers, each worker yields its own part."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self):
        info = get_worker_info()
        start, step = (info.id, info.num_workers) if info is not None else (0, 1)
        for i in range(start, self.n, step):
            x, y = features(i)
            yield x + noise(), y


def make_loader(config: str) -> Any:
    world, rank = idist.get_world_size(), idist.get_rank()
    n = ITERS_PER_EPOCH * PER_RANK_BATCH * world - 1  # not divisible: samplers pad or drop
    batch = PER_RANK_BATCH * world
    if config == "generator":
        shard = Subset(Noisy(n + 1), range(rank, n + 1, world))
        gen = torch.Generator().manual_seed(7)
        return DataLoader(shard, batch_size=PER_RANK_BATCH, shuffle=True, generator=gen)
    if config == "workers":
        workers = 2 * idist.get_nproc_per_node()
        return idist.auto_dataloader(Noisy(n), batch_size=batch, shuffle=True, num_workers=workers)
    if config == "iterable":
        return idist.auto_dataloader(NoisyStream(n), batch_size=batch, split="even")
    if config == "iterable_workers":
        workers = 2 * idist.get_nproc_per_node()
        n = 2 * ITERS_PER_EPOCH * PER_RANK_BATCH * world  # 2 workers: 4 items left each
        return idist.auto_dataloader(
            NoisyStream(n - 1), batch_size=2 * batch, split="even", num_workers=workers
        )
    return idist.auto_dataloader(Noisy(n), batch_size=batch, shuffle=True)


def _output(x, y, y_pred, loss):
    return y_pred.detach().float(), y, loss.detach()


@dataclass
class Run:
    """The objects of one run and what it records."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    trainer: Engine
    loader: Any
    to_save: dict[str, Any]
    losses: list = field(default_factory=list)
    epochs: list = field(default_factory=list)


def build(config: str) -> Run:
    # On 3+ ranks a sum's rounding depends on where an element sits in DDP's gradient
    # bucket, and torch's DDP re-lays its buckets after a new DDP's first iteration, so
    # the first iteration after any resume would sum in another order. One layout for the
    # whole run (find_unused_parameters=True never re-lays) takes that out of the test.
    ddp = dict(find_unused_parameters=True) if idist.get_world_size() >= 3 else {}
    model = idist.auto_model(
        nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3)), **ddp
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    options: dict[str, Any] = {}
    if config == "bf16":
        options = dict(amp_mode="amp")
    if config == "fp16_scaler":  # fp16 + GradScaler on the CPU: the GPU path's stand-in
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=3)
        options = dict(amp_mode="amp", amp_dtype=torch.float16, scaler=scaler)
    if config == "accumulation":
        options = dict(gradient_accumulation_steps=3)
    trainer = create_supervised_trainer(
        model, optimizer, nn.CrossEntropyLoss(), output_transform=_output, **options
    )
    module = getattr(model, "module", model)
    to_save: dict[str, Any] = {"model": module, "optimizer": optimizer, "trainer": trainer}
    if config == "scheduler":
        scheduler = LRScheduler(torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.5))
        trainer.add_event_handler(Events.EPOCH_STARTED, scheduler)
        to_save["scheduler"] = scheduler
    if config == "metrics":
        Accuracy(lambda out: out[:2]).attach(trainer, "accuracy")
        Loss(nn.functional.cross_entropy, lambda out: out[:2]).attach(trainer, "loss")
        Average(lambda out: out[2]).attach(trainer, "mean_loss")
        Accuracy(lambda out: out[:2]).attach(trainer, "running_accuracy", usage="running")
    run = Run(model, optimizer, trainer, make_loader(config), to_save)
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: run.losses.append(e.state.output[2])
    )
    trainer.add_event_handler(
        Events.EPOCH_COMPLETED, lambda e: run.epochs.append(dict(e.state.metrics))
    )
    return run


def final_state(run: Run, losses: list, epochs: list) -> dict[str, Any]:
    saved = {name: obj.state_dict() for name, obj in run.to_save.items() if name != "trainer"}
    s = run.trainer.state
    return {**saved, "losses": losses, "epochs": epochs, "end": (s.iteration, s.epoch)}


def serialized(run: Run) -> bytes:
    buffer = io.BytesIO()
    torch.save({name: obj.state_dict() for name, obj in run.to_save.items()}, buffer)
    return buffer.getvalue()


def uninterrupted(config: str) -> dict[str, Any]:
    idist.manual_seed(0)
    run = build(config)
    run.trainer.run(run.loader, max_epochs=EPOCHS)
    return final_state(run, run.losses, run.epochs)


def interrupted(config: str, stop: int) -> dict[str, Any]:
    idist.manual_seed(0)
    first = build(config)
    saved: dict[str, bytes] = {}

    @first.trainer.on(Events.ITERATION_COMPLETED(once=stop))
    def save_and_stop(engine: Engine) -> None:
        saved["bytes"] = serialized(first)
        engine.terminate()

    first.trainer.run(first.loader, max_epochs=EPOCHS)
    losses, epochs = first.losses, first.epochs
    idist.manual_seed(1000 + stop)  # a new process: other generator states, other objects
    second = build(config)
    states = torch.load(io.BytesIO(saved["bytes"]), weights_only=True)
    for name, obj in second.to_save.items():
        obj.load_state_dict(states[name])
    second.trainer.run(second.loader, max_epochs=EPOCHS)
    return final_state(second, losses + second.losses, epochs + second.epochs)


def differences(want: Any, got: Any, path: str = "") -> list[str]:
    """Where ``got`` differs from ``want`` bit for bit (tensors: dtype, shape and values)."""
    if isinstance(want, dict) and isinstance(got, dict):
        if set(want) != set(got):
            return [f"{path}: keys {sorted(want)} != {sorted(got)}"]
        return [d for k in want for d in differences(want[k], got[k], f"{path}.{k}")]
    if isinstance(want, (list, tuple)) and isinstance(got, (list, tuple)):
        if len(want) != len(got):
            return [f"{path}: length {len(want)} != {len(got)}"]
        return [
            d for i, (a, b) in enumerate(zip(want, got)) for d in differences(a, b, f"{path}[{i}]")
        ]
    if isinstance(want, torch.Tensor) and isinstance(got, torch.Tensor):
        if want.dtype != got.dtype or want.shape != got.shape or not torch.equal(want, got):
            gap = (
                (want.double() - got.double()).abs().max().item()
                if want.shape == got.shape
                else None
            )
            return [f"{path}: tensors differ (max abs difference {gap})"]
        return []
    return [] if want == got else [f"{path}: {want!r} != {got!r}"]


def resume_matrix(config: str, stops: tuple[int, ...] = STOPS) -> list[str]:
    """Every difference between the uninterrupted run and each resumed one (empty: exact)."""
    # Pool ranks are spawned daemonic processes: multiprocessing forbids daemons to start
    # a DataLoader's workers, and would spawn them (seconds each). Ranks that torchrun
    # starts fork their workers; so do these (they die with the test process anyway).
    multiprocessing.current_process()._config["daemon"] = False
    multiprocessing.set_start_method("fork", force=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only cost time on a loaded machine
    try:
        want = uninterrupted(config)
        found = []
        for stop in stops:
            found += [f"stop at {stop}: {d}" for d in differences(want, interrupted(config, stop))]
        return found
    finally:
        torch.set_num_threads(threads)
