"""``python -m launch dist.strategy=fsdp``: the default job sharded, stopped and resumed."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from distengine.checkpoint import ShardedCheckpoint, find_latest_checkpoint
from launch.consolidate import main as consolidate_main
from launch.recipe.data import digits
from launch.recipe.models import mlp
from tests.launcher.launching import launch
from tests.launcher.weights import SHORT, assert_bitwise_equal

FSDP = "dist.strategy=fsdp"


def accuracy(weights: dict) -> float:
    """The default job's validation accuracy of ``weights`` (an MLP state dict)."""
    model = mlp()
    model.load_state_dict(weights)
    model.eval()
    _, val = digits()
    x, y = val.tensors
    with torch.no_grad():
        return (model(x).argmax(1) == y).double().mean().item()


def sharded_final_weights(run_dir: Path, out: Path) -> dict:
    """The model of the newest checkpoint folder, consolidated into one file and loaded."""
    path, found = find_latest_checkpoint(run_dir / "checkpoints")
    assert isinstance(found, ShardedCheckpoint) and found.metadata["iteration"] == 88
    assert consolidate_main([str(path), str(out), "--entry", "model"]) == 0
    return torch.load(out, weights_only=True)


@pytest.fixture(scope="module")
def fsdp_uninterrupted(tmp_path_factory) -> tuple[Path, dict]:
    run_dir = tmp_path_factory.mktemp("fsdp_uninterrupted")
    run = launch(f"hydra.run.dir={run_dir}", FSDP, *SHORT, check=True)
    assert "model: 9,610 parameters, 4,805 of them on rank 0 (fsdp over 2 rank(s))" in run.stdout
    return run_dir, sharded_final_weights(run_dir, run_dir / "model.pt")


def test_the_default_job_sharded_reaches_the_accuracy_of_ddp(fsdp_uninterrupted, uninterrupted):
    run_dir, weights = fsdp_uninterrupted
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["world_size"] == 2 and summary["epoch"] == 4
    reached = summary["validation"]["accuracy"]
    assert reached == pytest.approx(accuracy(weights), abs=1e-9)  # the consolidated model's
    assert abs(reached - accuracy(uninterrupted)) <= 0.01  # DDP's, same data and steps
    folders = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert folders == ["checkpoint_85", "checkpoint_88"]  # n_saved=2, sharded folders


def test_sigterm_saves_a_sharded_checkpoint_and_a_rerun_resumes_bitwise(
    tmp_path, fsdp_uninterrupted
):
    overrides = [
        f"hydra.run.dir={tmp_path}",
        FSDP,
        *SHORT,
        "task.entrypoint=tests.launcher.entry_points:train_and_sigterm_launcher_once",
    ]
    first = launch(*overrides)
    assert first.returncode == 75, first.stderr
    stop = json.loads((tmp_path / "stop.json").read_text())
    saved = Path(stop["checkpoint"])
    assert saved.is_dir() and saved.name == f"checkpoint_{stop['iteration']}"
    assert 31 <= stop["iteration"] < 88
    assert f"checkpoint saved: {saved}\nTo resume: " in first.stderr
    second = launch(*overrides, check=True)
    assert f"resumed from {saved} (iteration {stop['iteration']})" in second.stdout
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # same world size: no warning of a changed one
        final = sharded_final_weights(tmp_path, tmp_path / "model.pt")
    assert_bitwise_equal(final, fsdp_uninterrupted[1])


@pytest.mark.parametrize(
    "saved, now, refused",
    [(2, 2, False), (2, 1, False), (2, 4, False), (2, 3, True), (4, 6, True), (3, 2, True)],
)
def test_a_run_resumes_on_any_number_of_ranks_that_divides_the_global_batch(saved, now, refused):
    from launch.recipe.run_info import world_size_problem

    problem = world_size_problem(saved, now, 64)
    assert (problem is not None) == refused
    if refused and saved == 3:  # 3 ranks trained 63 a step: another number would not continue
        assert problem.startswith("3 ranks when saved, 2 now, with global batches of 63 samples")
    elif refused:
        assert problem.startswith(f"world size {saved} in the checkpoint, {now} now: ")
        assert "data.batch_size=64 (the global batch) cannot be split evenly" in problem


def test_the_run_record_accepts_another_world_size_that_divides_the_batch():
    from launch.config.compose import compose
    from launch.recipe.run_info import RunInfo

    cfg = compose(["model=transformer", "dist.strategy=fsdp"])
    cfg.run_id = "r"
    info = RunInfo(cfg)  # this process: world size 1
    info.load_state_dict({**info.state_dict(), "world_size": 2})
    changed = {**info.state_dict(), "world_size": 2}
    changed["config"] = {
        **changed["config"],
        "data": {**changed["config"]["data"], "batch_size": 3},
    }
    with pytest.raises(ValueError, match="data: data.batch_size changed"):
        info.load_state_dict(changed)


@pytest.mark.parametrize("tokens", [8, 64])
def test_the_transformer_reads_digits_and_shards_block_by_block(tokens):
    from distengine.distributed.fsdp import default_blocks
    from launch.recipe.models import transformer

    model = transformer(width=32, depth=3, tokens=tokens)
    assert model(torch.rand(5, 64)).shape == (5, 10)
    assert default_blocks(model) == list(model.blocks)
    with pytest.raises(ValueError, match="model.tokens=5: expected a divisor of 64"):
        transformer(tokens=5)


def test_a_sharded_folder_without_its_manifest_is_set_aside_and_reported(tmp_path):
    """The commit writes manifest.json before the rename: a final folder without it is damaged."""
    launch(f"hydra.run.dir={tmp_path}", FSDP, "trainer.max_epochs=2", SHORT[-1], check=True)
    folder = tmp_path / "checkpoints"
    (folder / "checkpoint_44" / "manifest.json").unlink()
    shards = sorted(p.name for p in (folder / "checkpoint_44").iterdir())
    run = launch(f"hydra.run.dir={tmp_path}", FSDP, "trainer.max_epochs=3", SHORT[-1], check=True)
    assert (
        f"checkpoint {folder / 'checkpoint_44'} is corrupt (sharded checkpoint "
        f"{folder / 'checkpoint_44'} has no manifest.json: "
    ) in run.stdout
    assert f"moved to {folder / 'corrupt' / 'checkpoint_44'}\n" in run.stdout
    assert f"resumed from {folder / 'checkpoint_22'} (iteration 22)" in run.stdout
    assert sorted(p.name for p in (folder / "corrupt" / "checkpoint_44").iterdir()) == shards
