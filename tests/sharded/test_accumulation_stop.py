"""A stop signal inside an FSDP gradient-accumulation window: the ranks stop at the window's end
and save there (the window's unreduced gradients live inside the sharded model, where no
checkpoint reaches them), instead of refusing the stop checkpoint."""

from __future__ import annotations

import signal
from pathlib import Path

import torch

import distengine.distributed as idist
from distengine.engine import Events, create_supervised_trainer
from distengine.handlers import Checkpoint, Preemption
from tests.sharded.common import TinyTransformer
from tests.sharded.trainer_run import GLOBAL_BATCH, dataset, loss_fn


def stop_inside_a_window(folder: str) -> dict:
    """4 micro-steps per window, 6 iterations per epoch; rank 0 alone gets SIGTERM at
    iteration 7, in the window 7-10."""
    torch.manual_seed(0)
    model = idist.auto_model(TinyTransformer(), strategy="fsdp")
    optimizer = idist.auto_optim(torch.optim.AdamW(model.parameters(), lr=1e-2))
    trainer = create_supervised_trainer(model, optimizer, loss_fn, gradient_accumulation_steps=4)
    loader = idist.auto_dataloader(dataset(), batch_size=GLOBAL_BATCH, shuffle=True, seed=0)
    to_save = {"model": model, "optimizer": optimizer, "trainer": trainer}
    checkpoint = Checkpoint(to_save, folder)
    preemption = Preemption(on_stop=checkpoint, every=1)
    preemption.attach(trainer)

    @trainer.on(Events.ITERATION_COMPLETED(once=7))
    def signal_rank_0():
        if idist.get_rank() == 0:
            preemption.received.add(signal.SIGTERM)

    trainer.run(loader, max_epochs=3)
    return {
        "iteration": trainer.state.iteration,
        "preempted": trainer.state.preempted,
        "saved": str(checkpoint.last_checkpoint),
    }


def test_a_stop_inside_an_fsdp_accumulation_window_saves_at_its_end(ranks2, tmp_path):
    found = ranks2.run(stop_inside_a_window, str(tmp_path), timeout=120)
    saved = tmp_path / "checkpoint_10"
    assert found == [{"iteration": 10, "preempted": True, "saved": str(saved)}] * 2
    assert (saved / "manifest.json").is_file()
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == ["checkpoint_10"]
