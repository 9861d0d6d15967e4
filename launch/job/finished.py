"""A run that already finished, said at once: before the ranks start, not seconds later.

The default recipe resumes a finished run only to validate its last
checkpoint; the launcher reads that checkpoint's trainer state itself (a
memory-mapped ``torch.load``, weights only) and says so before the ranks
have imported anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from launch.job.folder import RunFolder


def trainer_position(checkpoint: Path) -> dict[str, Any] | None:
    """``iteration``, ``epoch`` and ``epoch_length`` saved in a checkpoint file (rank 0's), or
    None (a sharded folder, a file that does not load: the ranks report those)."""
    if not checkpoint.is_file():
        return None
    import torch

    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
        trainer = state["trainer"]
        trainer = trainer.get("__per_rank__", [trainer])[0]
        return {k: trainer[k] for k in ("iteration", "epoch", "epoch_length")}
    except Exception:  # noqa: BLE001 - any doubt: the ranks decide and say
        return None


def finished_note(folder: RunFolder, job: dict[str, Any], run_id: str) -> str | None:
    """``the run in <dir> already finished its 8 epochs ...`` when its newest checkpoint holds
    the end of epoch ``trainer.max_epochs`` (or later), else None."""
    if job["checkpoint"]["resume"] != "auto" or job["task"]["script"] or job["task"]["entrypoint"]:
        return None
    newest = folder.newest_checkpoint(run_id)
    if newest is None:
        return None
    position = trainer_position(newest[0])
    epochs = int(job["trainer"]["max_epochs"])
    if position is None or not position.get("epoch_length"):
        return None
    if int(position["iteration"]) < epochs * int(position["epoch_length"]):
        return None
    return (
        f"the run in {folder.path} already finished {epochs} epochs (its newest checkpoint "
        f"{newest[0]} holds iteration {position['iteration']}): the ranks only validate it; "
        f"a larger trainer.max_epochs trains on"
    )
