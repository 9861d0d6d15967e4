"""FSDP through create_supervised_trainer and Checkpoint: exact resume, resharding, consolidation.

One 2-rank pool call trains, checkpoints (sync, async, scored) and resumes;
the tests below read what it wrote.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch

from distengine.checkpoint import ShardedCheckpoint, find_latest_checkpoint, read_manifest
from distengine.engine import create_supervised_trainer
from distengine.handlers import Checkpoint
from launch.consolidate import main as consolidate_main
from tests.sharded.common import TinyTransformer, differences
from tests.sharded.trainer_run import loss_fn, on_two_ranks, paused_while_saving, resumed


def load(path: Path) -> dict:
    return torch.load(path, weights_only=True)


@pytest.fixture(scope="module")
def two_ranks(pools, tmp_path_factory) -> tuple[Path, list[str]]:
    folder = tmp_path_factory.mktemp("trainer_on_two")
    last = pools.get(2).run(on_two_ranks, str(folder), timeout=180)[0]
    return folder, last


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_resume_on_the_same_world_size_is_bitwise_exact(two_ranks, kind):
    folder, _ = two_ranks
    run = folder / "adamw"
    result = load(run / f"resumed_{kind}_on_2.pt")
    assert (result["loaded_at"], result["iteration"]) == (8, 12)
    assert differences(result["loaded"], load(run / "saved.pt")) == []  # model and AdamW state
    assert differences(result["final"], load(run / "uninterrupted.pt")) == []


@pytest.mark.parametrize("world", [3, 1], ids=["2to3", "2to1"])
def test_resume_on_another_world_size_continues_the_same_samples(pools, two_ranks, world):
    folder, _ = two_ranks
    run = folder / "sgd"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if world == 1:  # this process, no process group: a plain model
            resumed(str(run), "sgd")
        else:
            pools.get(world).run(resumed, str(run), "sgd", timeout=120)
    result = load(run / f"resumed_sync_on_{world}.pt")
    assert (result["loaded_at"], result["iteration"]) == (8, 12)
    assert differences(result["loaded"], load(run / "saved.pt")) == []  # exactly what was saved
    # the same global batches: only the reduction order differs
    assert differences(result["final"], load(run / "uninterrupted.pt"), atol=1e-6) == []
    assert torch.isfinite(torch.tensor(result["loss"]))
    if world == 1:
        said = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        assert any("resuming on 1 rank(s) from states saved on 2" in m for m in said), said


def test_an_interrupted_run_commits_its_asynchronous_save(pools, tmp_path):
    found = pools.get(2).run(paused_while_saving, str(tmp_path), timeout=120)
    for last, listing in found:
        assert last == str(tmp_path / "checkpoint_4")
        assert listing == ["checkpoint_4"]  # committed; checkpoint_2 pruned (n_saved=1)
    assert ShardedCheckpoint(tmp_path / "checkpoint_4").metadata["iteration"] == 4


def test_retention_scores_and_metadata_work_on_folders(two_ranks):
    folder, last = two_ranks
    run = folder / "sgd"
    assert sorted(os.listdir(run / "sync")) == ["checkpoint_8"]  # n_saved=1
    assert sorted(os.listdir(run / "async")) == ["checkpoint_4", "checkpoint_8"]
    assert os.listdir(run / "best") == ["best_checkpoint_4_closeness=-0.0000"]  # best score kept
    assert last == [
        str(run / "sync/checkpoint_8"),
        str(run / "async/checkpoint_8"),
        str(run / "best/best_checkpoint_4_closeness=-0.0000"),
    ]
    manifest = read_manifest(run / "sync" / "checkpoint_8")
    assert {k: manifest[k] for k in ("iteration", "epoch", "world_size", "step", "run")} == {
        "iteration": 8,
        "epoch": 2,
        "world_size": 2,
        "step": 8,
        "run": "a",
    }
    assert manifest["entries"] == {"sharded": ["model", "optimizer"], "plain": ["trainer"]}
    path, found = find_latest_checkpoint(run / "async", where=lambda meta: meta["iteration"] < 8)
    assert path == run / "async" / "checkpoint_4" and isinstance(found, ShardedCheckpoint)
    assert find_latest_checkpoint(run / "sync", where=lambda meta: meta.get("run") == "b") is None


def test_a_consolidated_checkpoint_has_every_parameter_at_full_shape(two_ranks, tmp_path):
    folder, _ = two_ranks
    checkpoint = folder / "sgd" / "sync" / "checkpoint_8"
    assert consolidate_main([str(checkpoint), str(tmp_path / "model.pt"), "--entry", "model"]) == 0
    model = load(tmp_path / "model.pt")
    full = TinyTransformer().state_dict()
    assert {k: v.shape for k, v in model.items()} == {k: v.shape for k, v in full.items()}
    assert differences(model, load(folder / "sgd" / "saved.pt")["model"]) == []
    TinyTransformer().load_state_dict(model)
    assert consolidate_main([str(checkpoint), str(tmp_path / "all.pt")]) == 0
    everything = load(tmp_path / "all.pt")
    assert sorted(everything) == ["model", "optimizer", "trainer"]
    assert [s["iteration"] for s in everything["trainer"]["__per_rank__"]] == [8, 8]
    assert consolidate_main([str(checkpoint), str(tmp_path / "x.pt"), "--entry", "nope"]) == 2
    assert not (tmp_path / "x.pt").exists()


def test_a_rank_killed_during_a_checkpoint_save_leaves_the_previous_one_loadable(tmp_path):
    from tests.sharded.killed_save import run_killed_save

    codes = run_killed_save(tmp_path, through_checkpoint=True)
    assert codes[1] == -9 and codes[0] != 0  # rank 0 noticed and failed, did not hang
    path, found = find_latest_checkpoint(tmp_path)
    assert path == tmp_path / "checkpoint_1" and isinstance(found, ShardedCheckpoint)
    model = TinyTransformer()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    trainer = create_supervised_trainer(model, opt, loss_fn)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # states of 2 ranks resumed by one
        Checkpoint.load_objects({"model": model, "optimizer": opt, "trainer": trainer}, found)
    assert trainer.state.iteration == 1
