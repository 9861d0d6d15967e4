"""Saving and loading the default job's checkpoint: Checkpoint vs bare torch.save/torch.load.

Checkpoint writes atomically (temporary file, flush, fsync, rename) with a
CRC-32 beside it, and verifies it at load; the bare calls do none of that.
Both loads put the state into the objects (``load_state_dict``).
Median of several runs.

Run: ``python benchmarks/checkpoint_io.py``
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from common import machine, median_time  # noqa: E402


def objects(width: int):
    from distengine.engine import create_supervised_trainer

    model = nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 64)).sum().backward()
    optimizer.step()  # so Adam has its moment buffers
    trainer = create_supervised_trainer(model, optimizer, nn.CrossEntropyLoss())
    trainer.run([(torch.randn(4, 64), torch.randint(0, 10, (4,)))])
    return {"model": model, "optimizer": optimizer, "trainer": trainer}


def measure(width: int, folder: Path) -> tuple[float, float, float, float, int]:
    from distengine.engine import Events
    from distengine.handlers import Checkpoint, DiskSaver

    to_save = objects(width)
    engine = to_save["trainer"]
    engine.last_event_name = Events.EPOCH_COMPLETED
    checkpoint = Checkpoint(to_save, DiskSaver(folder / "ours", require_empty=False), n_saved=1)
    plain = folder / "plain.pt"

    def bare_save():
        torch.save({k: v.state_dict() for k, v in to_save.items()}, plain)

    def ours():
        engine.state.iteration += 1  # a new step each time: Checkpoint skips a step it already has
        checkpoint(engine)
        saved = Path(checkpoint.last_checkpoint).name  # a save that was skipped measures nothing
        assert saved.endswith(f"_{engine.state.iteration}.pt"), saved

    ours_save = median_time(ours)
    bare = median_time(bare_save)
    path = folder / "ours" / checkpoint.last_checkpoint
    ours_load = median_time(lambda: Checkpoint.load_objects(to_save, path))

    def bare_load_into_objects():
        state = torch.load(plain, weights_only=True)
        for name, obj in to_save.items():
            obj.load_state_dict(state[name])

    bare_load = median_time(bare_load_into_objects)
    return ours_save, bare, ours_load, bare_load, plain.stat().st_size


def main() -> None:
    print(f"# Checkpoint save/load ({machine()}; model + Adam + engine state, median of 7)")
    print("| checkpoint size | Checkpoint save | torch.save | Checkpoint load | torch.load |")
    print("|---|---|---|---|---|")
    for width in (128, 65536):  # the default job's MLP, and a ~40 MB one
        with tempfile.TemporaryDirectory() as tmp:
            ours_save, bare_save, ours_load, bare_load, size = measure(width, Path(tmp))
        print(
            f"| {size / 1e6:.2f} MB | {ours_save * 1e3:.1f} ms | {bare_save * 1e3:.1f} ms "
            f"| {ours_load * 1e3:.1f} ms | {bare_load * 1e3:.1f} ms |"
        )


if __name__ == "__main__":
    main()
