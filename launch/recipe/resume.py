"""Where the recipe resumes from: this run's newest valid checkpoint, chosen once by rank 0.

Rank 0 first moves the checkpoints of other runs into ``checkpoints/previous/``
(:mod:`launch.recipe.lineage`), then looks (corrupt files are moved into
``checkpoints/corrupt/`` and reported), broadcasts the path, every
rank loads that checkpoint (a file, memory-mapped, or a sharded folder, each
rank reading its shards), and the ranks check that they all hold the same
iteration. A run saved on another number of ranks resumes where the checks
of :class:`~launch.recipe.run_info.RunInfo` allow it. A restart
(``TORCHELASTIC_RESTART_COUNT > 0``) always resumes from the run's own
checkpoints, whatever ``checkpoint.resume`` said for the first start.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import distengine.distributed as idist
from distengine.checkpoint import list_checkpoints, open_checkpoint
from distengine.handlers import Checkpoint, find_latest_checkpoint
from launch.recipe.aside import move_aside
from launch.recipe.lineage import set_aside_others

CORRUPT_FOLDER = "corrupt"


def restart_count() -> int:
    """0 on the first attempt, N on the agent's N-th restart."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


def wants_resume(cfg: Any) -> bool:
    return cfg.checkpoint.resume == "auto" or restart_count() > 0


def set_aside(path: str | os.PathLike, reason: str) -> Path:
    """Move a corrupt checkpoint file (and its sidecars) or folder into ``corrupt/`` (rank 0).

    Example::

        set_aside("run/checkpoints/checkpoint_44.pt", "its CRC-32 differs")
    """
    path = Path(path)
    target = move_aside(path, path.parent / CORRUPT_FOLDER)
    reason = reason.removeprefix(f"checkpoint {path} is corrupt: ")  # said once, not twice
    print(f"checkpoint {path} is corrupt ({reason}); moved to {target}", flush=True)
    return target


def choose(folder: Path, run_id: str, moved: list[Path]) -> tuple[Path, dict[str, Any]] | None:
    """This run's newest checkpoint that loads, with its contents (call on rank 0 only).

    Corrupt files met on the way are set aside and appended to ``moved``.
    """

    def on_corrupt(path: Any, reason: str) -> None:
        moved.append(set_aside(path, reason))

    return find_latest_checkpoint(
        folder, where=lambda meta: meta.get("run_id") == run_id, on_corrupt=on_corrupt
    )


def resume(
    cfg: Any, to_load: dict[str, Any], trainer: Any, checkpoint: Checkpoint | None = None
) -> Path | None:
    """Load this run's newest checkpoint into ``to_load`` on every rank; its path, or None.

    Rank 0 first moves other runs' checkpoints aside (whatever ``checkpoint.resume``
    says: this run must not overwrite them), then says which: ``resumed from
    <file> (iteration N)``, or that the run starts at iteration 0 and why.
    ``checkpoint`` (the run's :class:`Checkpoint`) then keeps ``checkpoint.n_saved``
    over the run, not the attempt: it adopts the run's checkpoints that earlier
    attempts left (see :func:`adopt`).
    """
    folder, moved = Path(cfg.run_dir) / "checkpoints", []
    if idist.get_rank() == 0:
        set_aside_others(folder, cfg.run_id, lambda path, why: moved.append(set_aside(path, why)))
    if not wants_resume(cfg):
        _say("checkpoint.resume=never: starting at iteration 0")
        return None
    found = choose(folder, cfg.run_id, moved) if idist.get_rank() == 0 else None
    path = idist.broadcast(str(found[0]) if found else None, src=0)
    if path is None:
        if moved:
            _say(
                f"no valid checkpoint of this run is left in {folder} ({len(moved)} corrupt, "
                f"set aside in {folder / CORRUPT_FOLDER}): training starts from iteration 0"
            )
        else:
            _say(f"no checkpoint of this run in {folder}: starting at iteration 0")
        return None
    state = found[1] if found else open_checkpoint(Path(path))
    Checkpoint.load_objects({"run": to_load["run"]}, state)  # refuses a mismatched run first
    Checkpoint.load_objects(to_load, state)
    check_same_iteration(trainer.state.iteration, path)
    if checkpoint is not None:
        adopt(checkpoint, folder, cfg.run_id, Path(path))
    if idist.get_rank() == 0:
        attempt = restart_count()
        said = f"attempt {attempt + 1} (restart {attempt}) " if attempt else ""
        print(f"{said}resumed from {path} (iteration {trainer.state.iteration})", flush=True)
    return Path(path)


def adopt(checkpoint: Checkpoint, folder: Path, run_id: str, resumed: Path) -> None:
    """Hand ``checkpoint`` the run's own checkpoints in ``folder`` (every rank calls it).

    Each attempt's :class:`Checkpoint` starts knowing no file, so without this
    ``n_saved`` would hold per attempt: two stops and a resume would leave
    three attempts' worth. Rank 0 lists the files and folders whose metadata
    names ``run_id`` (never another run's), with their priority (the
    iteration); every rank gets the same list, so every rank's next save
    prunes the same ones.
    """
    mine = None
    if idist.get_rank() == 0:
        found = list_checkpoints(folder, on_corrupt=lambda path, reason: None)
        mine = sorted(
            [float(meta.get("priority", meta["iteration"])), path.name]
            for path, meta in found
            if meta.get("run_id") == run_id and isinstance(meta.get("iteration"), int)
        )
    mine = idist.broadcast(mine, src=0)
    checkpoint.load_state_dict({"saved": mine, "last": resumed.name})


def _say(line: str) -> None:
    if idist.get_rank() == 0:
        print(line, flush=True)


def check_same_iteration(iteration: int, path: str) -> None:
    """Every rank must hold the same iteration after loading ``path``."""
    seen = idist.all_gather(int(iteration))
    seen = seen if isinstance(seen, list) else [int(v) for v in seen.tolist()]
    if len(set(seen)) > 1:
        ranks = ", ".join(f"rank {r}: {it}" for r, it in enumerate(seen))
        raise RuntimeError(f"the ranks loaded different iterations from {path} ({ranks})")
