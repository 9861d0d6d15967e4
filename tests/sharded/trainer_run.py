"""FSDP training through ``create_supervised_trainer`` and ``Checkpoint``, on any number of ranks.

Every function runs on each rank of a pool (or in one process without a
process group) and writes what the test compares into files on rank 0.
Data: 36 token sequences, global batch 6 (divisible by 1, 2 and 3 ranks),
so an epoch is 6 iterations on any world size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

import distengine.distributed as idist
from distengine.engine import Events, create_supervised_trainer
from distengine.handlers import Checkpoint
from distengine.metrics import RunningAverage
from tests.sharded.common import VOCAB, TinyTransformer, full_state, save_on_rank0

GLOBAL_BATCH = 6
EPOCHS = 2


def dataset() -> TensorDataset:
    g = torch.Generator().manual_seed(5)
    x = torch.randint(0, VOCAB, (36, 5), generator=g)
    return TensorDataset(x, (x * 7 + 3) % VOCAB)


def loss_fn(y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(y_pred.flatten(0, 1).float(), y.flatten())


def build(optimizer: str) -> dict[str, Any]:
    """Model (sharded when there is a process group), optimizer, trainer and its loader."""
    torch.manual_seed(0)
    model = idist.auto_model(TinyTransformer(), strategy="fsdp")
    params = model.parameters()
    if optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=1e-2)
    else:
        opt = torch.optim.SGD(params, lr=0.1, momentum=0.9)
    opt = idist.auto_optim(opt)
    trainer = create_supervised_trainer(model, opt, loss_fn)
    RunningAverage(output_transform=lambda loss: loss).attach(trainer, "loss")
    loader = idist.auto_dataloader(
        dataset(), batch_size=GLOBAL_BATCH, shuffle=True, drop_last=True, seed=0
    )
    return {"model": model, "optimizer": opt, "trainer": trainer, "loader": loader}


def uninterrupted(folder: str, optimizer: str) -> None:
    run = build(optimizer)
    run["trainer"].run(run["loader"], max_epochs=EPOCHS)
    save_on_rank0(full_state(run["model"], run["optimizer"]), Path(folder, "uninterrupted.pt"))


def interrupted(folder: str, optimizer: str) -> list[str]:
    """Checkpoints every 4 iterations (sync, async, best-scored), stopped at iteration 8."""
    run = build(optimizer)
    trainer = run["trainer"]
    to_save = {k: run[k] for k in ("model", "optimizer", "trainer")}
    every4 = Events.ITERATION_COMPLETED(every=4)
    kept = {
        "sync": Checkpoint(to_save, Path(folder, "sync"), n_saved=1, metadata={"run": "a"}),
        "async": Checkpoint(to_save, Path(folder, "async"), n_saved=2, async_save=True),
        "best": Checkpoint(
            to_save,
            Path(folder, "best"),
            filename_prefix="best",
            score_function=lambda engine: -abs(engine.state.iteration - 4.0),
            score_name="closeness",
        ),
    }
    for checkpoint in kept.values():
        trainer.add_event_handler(every4, checkpoint)
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=8), lambda e: e.terminate())
    trainer.run(run["loader"], max_epochs=EPOCHS)  # its TERMINATE commits the async save
    save_on_rank0(full_state(run["model"], run["optimizer"]), Path(folder, "saved.pt"))
    return [str(checkpoint.last_checkpoint) for checkpoint in kept.values()]


def paused_while_saving(folder: str) -> list[Any]:
    """An asynchronous save at iteration 4, then interrupt(): ``run()`` returns (INTERRUPT)."""
    run = build("sgd")
    trainer = run["trainer"]
    to_save = {k: run[k] for k in ("model", "optimizer", "trainer")}
    checkpoint = Checkpoint(to_save, folder, async_save=True)
    trainer.add_event_handler(Events.ITERATION_COMPLETED(every=2), checkpoint)
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=4), lambda e: e.interrupt())
    trainer.run(run["loader"], max_epochs=EPOCHS)
    idist.barrier()
    return [str(checkpoint.last_checkpoint), sorted(p.name for p in Path(folder).iterdir())]


def resumed(folder: str, optimizer: str, kind: str = "sync") -> None:
    """Fresh objects, the newest checkpoint of ``kind`` loaded, trained to the end."""
    run = build(optimizer)
    to_load = {k: run[k] for k in ("model", "optimizer", "trainer")}
    path = sorted(Path(folder, kind).glob("checkpoint_*"))[-1]
    Checkpoint.load_objects(to_load, path)
    loaded = full_state(run["model"], run["optimizer"])
    at = run["trainer"].state.iteration
    run["trainer"].run(run["loader"], max_epochs=EPOCHS)
    result = {
        "loaded": loaded,
        "final": full_state(run["model"], run["optimizer"]),
        "loaded_at": at,
        "iteration": run["trainer"].state.iteration,
        "loss": float(run["trainer"].state.metrics["loss"]),
    }
    out = f"resumed_{kind}_on_{idist.get_world_size()}.pt"
    save_on_rank0(result, Path(folder, out))


def on_two_ranks(folder: str) -> list[str]:
    """Everything the 2-rank side of the tests needs, in one pool call."""
    for optimizer in ("adamw", "sgd"):
        sub = str(Path(folder, optimizer))
        Path(sub).mkdir(parents=True, exist_ok=True)
        uninterrupted(sub, optimizer)
        last = interrupted(sub, optimizer)
    for kind in ("sync", "async"):
        resumed(str(Path(folder, "adamw")), "adamw", kind)
    return last
