"""DCP checkpoints: exact resume on the same or another world size, consolidation, crashes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp

from distengine.checkpoint.consolidate import consolidate
from distengine.checkpoint.loading import find_latest_checkpoint
from distengine.checkpoint.sharded import MANIFEST, ShardedStorage, read_manifest
from distengine.checkpoint.sharded_state import gather_state, restore_state
from distengine.distributed import get_world_size
from tests.sharded.common import (
    TinyTransformer,
    build,
    differences,
    full_state,
    save_on_rank0,
    train,
)


class Progress:
    """Plain (unsharded) state beside the model: saved once, not per shard."""

    def __init__(self) -> None:
        self.iteration = 0
        self.history: list[int] = []

    def state_dict(self) -> dict:
        return {"iteration": self.iteration, "history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        self.iteration, self.history = state["iteration"], list(state["history"])


def objects(optimizer: str, shard: bool = True) -> dict:
    model, opt = build(shard=shard, optimizer=optimizer)
    return {"model": model, "optimizer": opt, "progress": Progress()}


def train_save_and_go_on(folder: str, optimizer: str) -> None:
    """2 steps, a sync and an async save, 2 more steps; the reference states to rank 0's file."""
    objs = objects(optimizer)
    model, opt, progress = objs["model"], objs["optimizer"], objs["progress"]
    train(model, opt, range(2))
    progress.iteration, progress.history = 2, [0, 1]
    ShardedStorage(Path(folder, "sync")).save("checkpoint_2", *gather_state(objs), {"iteration": 2})
    in_flight = ShardedStorage(Path(folder, "async"), async_save=True)
    in_flight.save("checkpoint_2", *gather_state(objs), {"iteration": 2})
    saved = full_state(model, opt)
    train(model, opt, range(2, 4))  # changes the weights while the async save is in flight
    in_flight.close()
    save_on_rank0({"saved": saved, "final": full_state(model, opt)}, Path(folder, "reference.pt"))


def load_and_go_on(folder: str, optimizer: str, kinds: tuple[str, ...] = ("sync", "async")) -> None:
    """Load each kind's checkpoint into fresh objects, then train the same 2 steps."""
    for kind in kinds:
        objs = objects(optimizer, shard=True)
        sharded, _ = gather_state(objs)
        plain = ShardedStorage(Path(folder, kind)).load("checkpoint_2", sharded)
        restore_state(objs, sharded, plain)
        loaded = full_state(objs["model"], objs["optimizer"])
        train(objs["model"], objs["optimizer"], range(2, 4))
        result = {
            "loaded": loaded,
            "final": full_state(objs["model"], objs["optimizer"]),
            "progress": objs["progress"].state_dict(),
        }
        save_on_rank0(result, Path(folder, f"resumed_{kind}_on_{get_world_size()}.pt"))


def test_resume_on_the_same_world_size_is_bitwise_exact(ranks, tmp_path):
    ranks.run(train_save_and_go_on, str(tmp_path), "adamw")
    ranks.run(load_and_go_on, str(tmp_path), "adamw")
    reference = torch.load(tmp_path / "reference.pt", weights_only=True)
    for kind in ("sync", "async"):
        resumed = torch.load(tmp_path / f"resumed_{kind}_on_{ranks.world_size}.pt")
        assert differences(resumed["loaded"], reference["saved"]) == [], kind
        assert differences(resumed["final"], reference["final"]) == [], kind
        assert resumed["progress"] == {"iteration": 2, "history": [0, 1]}
        manifest = read_manifest(tmp_path / kind / "checkpoint_2")
        assert manifest["iteration"] == 2 and manifest["world_size"] == ranks.world_size
        assert len([f for f in manifest["files"] if f.endswith(".distcp")]) == ranks.world_size


@pytest.fixture(scope="module")
def saved_on_two(pools, tmp_path_factory) -> Path:
    """A checkpoint written by 2 ranks (SGD with momentum), with its reference states."""
    folder = tmp_path_factory.mktemp("saved_on_two")
    pools.get(2).run(train_save_and_go_on, str(folder), "sgd")
    return folder


def load_in_this_process(folder: Path) -> dict:
    """World size 1 without a process group, into an unsharded model."""
    objs = objects("sgd", shard=False)
    sharded, _ = gather_state(objs)
    plain = ShardedStorage(folder / "sync").load("checkpoint_2", sharded)
    restore_state(objs, sharded, plain)
    loaded = full_state(objs["model"], objs["optimizer"])
    train(objs["model"], objs["optimizer"], range(2, 4))
    return {"loaded": loaded, "final": full_state(objs["model"], objs["optimizer"])}


@pytest.mark.parametrize("world", [3, 1], ids=["2to3", "2to1"])
def test_resume_on_another_world_size_loads_exactly_and_trains_on_closely(
    pools, saved_on_two, world
):
    if world == 1:
        resumed = load_in_this_process(saved_on_two)
    else:
        pools.get(world).run(load_and_go_on, str(saved_on_two), "sgd", ("sync",))
        resumed = torch.load(saved_on_two / f"resumed_sync_on_{world}.pt", weights_only=True)
    reference = torch.load(saved_on_two / "reference.pt", weights_only=True)
    assert differences(resumed["loaded"], reference["saved"]) == []  # model and optimizer
    assert differences(resumed["final"], reference["final"], atol=1e-6) == []


def test_consolidated_checkpoint_holds_every_parameter_at_full_shape(saved_on_two, tmp_path):
    out = consolidate(saved_on_two / "sync" / "checkpoint_2", tmp_path / "model.pt")
    state = torch.load(out, weights_only=True)
    full = TinyTransformer().state_dict()
    assert {k: v.shape for k, v in state["model"].items()} == {k: v.shape for k, v in full.items()}
    reference = torch.load(saved_on_two / "reference.pt", weights_only=True)
    assert differences(state["model"], reference["saved"]["model"]) == []
    assert state["progress"] == {"iteration": 2, "history": [0, 1]}
    TinyTransformer().load_state_dict(state["model"])  # loads into a plain model
    assert sorted(os.listdir(tmp_path)) == ["model.pt"]  # no temporary file left


def failing_commits(folder: str) -> dict:
    """Rank 1 fails after writing its shards, before the commit: sync, then async."""
    found = {}
    for kind in ("sync", "async"):
        objs = objects("adamw")
        storage = ShardedStorage(Path(folder, kind), async_save=kind == "async")
        storage.save("checkpoint_1", *gather_state(objs))
        storage.wait()
        if torch.distributed.get_rank() == 1:

            def written(pending, real=storage._written):
                real(pending)
                raise OSError("No space left on device (simulated)")

            storage._written = written
        try:
            storage.save("checkpoint_2", *gather_state(objs))
            storage.remove("checkpoint_1")  # retention: must wait for checkpoint_2's commit
            storage.wait()
            found[kind] = "saved"
        except RuntimeError as exc:
            found[kind] = str(exc)
        sharded, _ = gather_state(objects("adamw"))
        ShardedStorage(Path(folder, kind)).load("checkpoint_1", sharded)
    return found


def test_a_rank_failing_before_the_commit_leaves_the_previous_checkpoint(ranks2, tmp_path):
    for found in ranks2.run(failing_commits, str(tmp_path)):
        for kind in ("sync", "async"):
            assert found[kind] == (
                "sharded checkpoint 'checkpoint_2' was not saved (earlier checkpoints are "
                "intact): rank 1: OSError: No space left on device (simulated)"
            )
    for kind in ("sync", "async"):
        assert os.listdir(tmp_path / kind) == ["checkpoint_1"]


def test_a_rank_killed_mid_save_leaves_the_previous_checkpoint_loadable(tmp_path):
    from tests.sharded.killed_save import run_killed_save

    codes = run_killed_save(tmp_path)
    assert codes[1] == -9 and codes[0] != 0  # rank 0 noticed and failed, did not hang
    left = sorted(os.listdir(tmp_path))  # rank 0 may have removed the temporary folder
    assert left[-1] == "checkpoint_1"
    assert all(name.startswith(".checkpoint_2.tmp-") for name in left[:-1])
    objs = objects("adamw", shard=False)
    sharded, _ = gather_state(objs)
    ShardedStorage(tmp_path).load("checkpoint_1", sharded)  # also removes the leftover
    assert os.listdir(tmp_path) == ["checkpoint_1"]


@pytest.fixture
def saved_here(tmp_path) -> tuple[ShardedStorage, Path]:
    """A checkpoint saved by this process alone (world size 1, no process group)."""
    storage = ShardedStorage(tmp_path)
    storage.save("checkpoint_1", *gather_state(objects("adamw", shard=False)), {"epoch": 1})
    return storage, tmp_path / "checkpoint_1"


def flip_a_byte(folder: Path) -> str:
    shard = folder / "__0_0.distcp"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    return "__0_0.distcp is corrupt"


def drop_the_manifest(folder: Path) -> str:
    (folder / MANIFEST).unlink()
    return "is not a sharded checkpoint: it has no manifest.json"


def add_a_file(folder: Path) -> str:
    (folder / "stray.txt").write_text("x")
    return "does not match its manifest: missing [], extra ['stray.txt']"


def drop_the_metadata(folder: Path) -> str:
    (folder / ".metadata").unlink()
    return "does not match its manifest: missing ['.metadata'], extra []"


def edit_the_manifest(folder: Path) -> str:
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["format"] = "other/9"
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return "has format 'other/9', expected 'distengine-dcp/1'"


@pytest.mark.parametrize(
    "damage", [flip_a_byte, drop_the_manifest, add_a_file, drop_the_metadata, edit_the_manifest]
)
def test_a_damaged_folder_is_refused_naming_what_is_wrong(saved_here, damage):
    storage, folder = saved_here
    expected = damage(folder)
    with pytest.raises(RuntimeError, match="was not loaded: rank 0: ValueError") as info:
        storage.load("checkpoint_1", gather_state(objects("adamw", shard=False))[0])
    assert expected in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ValueError):
        consolidate(folder, folder.parent / "out.pt")


def test_a_folder_written_by_dcp_alone_is_neither_loaded_nor_removed(tmp_path):
    dcp.save({"model": TinyTransformer().state_dict()}, checkpoint_id=tmp_path / "foreign")
    storage = ShardedStorage(tmp_path)
    with pytest.raises(RuntimeError, match="has no manifest.json"):
        storage.load("foreign", {"model": TinyTransformer().state_dict()})
    with pytest.raises(ValueError, match="foreign is not a sharded checkpoint"):
        storage.remove("foreign")
    assert (tmp_path / "foreign" / ".metadata").exists()


def test_a_folder_of_shards_without_its_manifest_is_reported_not_skipped_silently(saved_here):
    _, folder = saved_here
    dcp.save({"model": TinyTransformer().state_dict()}, checkpoint_id=folder.parent / "foreign")
    drop_the_manifest(folder)
    (folder.parent / "notes").mkdir()  # a folder holding no shards is none of its business
    reported = []
    found = find_latest_checkpoint(folder.parent, on_corrupt=lambda *said: reported.append(said))
    assert found is None
    assert [path.name for path, _ in reported] == ["checkpoint_1", "foreign"]
    for path, reason in reported:
        assert f"sharded checkpoint {path} has no manifest.json" in reason and "\n" not in reason
    with pytest.warns(RuntimeWarning, match="checkpoint_1 has no manifest.json"):
        assert find_latest_checkpoint(folder.parent) is None
    assert (folder / ".metadata").exists()  # reported, neither loaded nor removed


def test_the_manifest_records_files_and_metadata(saved_here):
    storage, folder = saved_here
    manifest = read_manifest(folder)
    assert manifest["epoch"] == 1 and manifest["world_size"] == 1
    assert sorted(manifest["files"]) == [".metadata", "__0_0.distcp", "plain.pt"]
    for name, described in manifest["files"].items():
        assert described["size"] == (folder / name).stat().st_size
    assert storage.names() == ["checkpoint_1"]


def test_async_retention_removes_an_old_folder_only_after_the_new_one_is_committed(tmp_path):
    storage = ShardedStorage(tmp_path, async_save=True)
    objs = objects("adamw", shard=False)
    storage.save("checkpoint_1", *gather_state(objs))
    storage.save("checkpoint_2", *gather_state(objs))  # commits checkpoint_1 first
    assert storage.names() == ["checkpoint_1"]
    storage.remove("checkpoint_1")
    assert storage.names() == ["checkpoint_1"]  # checkpoint_2 is not committed yet
    storage.close()
    assert storage.names() == ["checkpoint_2"]


def test_saving_under_an_existing_name_replaces_the_folder(saved_here):
    storage, folder = saved_here
    storage.save("checkpoint_1", *gather_state(objects("sgd", shard=False)), {"epoch": 2})
    assert read_manifest(folder)["epoch"] == 2
    assert sorted(os.listdir(folder.parent)) == ["checkpoint_1"]


@pytest.mark.parametrize(
    "name, metadata, message",
    [
        ("../up", None, "without '/'"),
        (".hidden", None, "does not start with '.', got '.hidden'"),
        ("", None, "non-empty"),
        ("ok", {"files": 1}, r"metadata keys \['files'\] are reserved"),
    ],
)
def test_bad_names_and_metadata_are_refused(tmp_path, name, metadata, message):
    with pytest.raises(ValueError, match=message):
        ShardedStorage(tmp_path).save(name, {}, None, metadata)


def test_restore_names_an_entry_the_checkpoint_lacks(saved_here):
    storage, _ = saved_here
    objs = {**objects("adamw", shard=False), "scheduler": Progress()}
    sharded, _ = gather_state(objs)
    plain = storage.load("checkpoint_1", sharded)
    with pytest.raises(ValueError, match="no entry 'scheduler'; it holds"):
        restore_state(objs, sharded, plain)


def test_an_optimizer_without_its_model_is_refused():
    model = TinyTransformer()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="optimizer 'opt' updates parameters of no single module"):
        gather_state({"opt": opt, "other": TinyTransformer()})


def test_leftover_temporary_folders_are_removed_at_construction(tmp_path):
    (tmp_path / ".checkpoint_3.tmp-abc").mkdir()
    (tmp_path / ".checkpoint_3.tmp-abc" / "__0_0.distcp").write_bytes(b"half")
    (tmp_path / "mine.txt").write_text("user data")
    ShardedStorage(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["mine.txt"]
