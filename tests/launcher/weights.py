"""A short training and its final weights, to compare resumed runs with bit for bit."""

from pathlib import Path

import torch

#: 4 epochs of 22 iterations, a checkpoint every 5 iterations and at each epoch's end.
SHORT = ["trainer.max_epochs=4", "checkpoint.every_iters=5", "trainer.progress_bar=false"]


def final_weights(run_dir: Path) -> dict:
    checkpoints = sorted(
        (run_dir / "checkpoints").glob("checkpoint_*.pt"), key=lambda p: int(p.stem.split("_")[1])
    )
    state = torch.load(checkpoints[-1], weights_only=True)
    assert [s["iteration"] for s in state["trainer"]["__per_rank__"]] == [88, 88]  # per rank
    return state["model"]


def assert_bitwise_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
