"""The checkpoint path under faults: every failure on rank 0 reaches every rank in time, slow
writes are not failures, and a failed load says whether the file or this process is to blame."""

import json
import os
import pickle
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch import nn

from distengine.checkpoint import (
    CheckpointEnvironmentError,
    CheckpointLoadError,
    CorruptCheckpointError,
    DiskSaver,
    gather_states,
    list_checkpoints,
    load_checkpoint_file,
)
from distengine.checkpoint.disk import file_checksum, meta_path
from distengine.handlers import find_latest_checkpoint


class Unpicklable:
    """A state_dict whose value cannot be pickled (torch.save raises on rank 0 only)."""

    def state_dict(self):
        return {"fn": lambda: 1}

    def load_state_dict(self, state):
        pass


class Interrupting:
    """A value whose pickling raises KeyboardInterrupt (a Ctrl-C in the middle of a write)."""

    def __reduce__(self):
        raise KeyboardInterrupt


def save_what_rank_0_cannot_write(folder):
    outcomes = []
    for name, checkpoint in (
        ("lambda", {"x": {"fn": lambda: 1}}),
        ("interrupt", {"x": Interrupting()}),
    ):
        try:
            DiskSaver(folder, require_empty=False)(checkpoint, f"{name}.pt")
            outcomes.append((name, None))
        except BaseException as error:  # noqa: BLE001 - what each rank raised
            outcomes.append((name, f"{type(error).__name__}: {error}"))
    return outcomes


def test_any_write_error_on_rank_0_reaches_every_rank_at_once(ranks2, tmp_path):
    start = time.monotonic()
    rank0, rank1 = ranks2.run(save_what_rank_0_cannot_write, str(tmp_path), timeout=30)
    assert time.monotonic() - start < 30  # before: rank 1 waited out the group's timeout
    assert rank0[0][1].startswith("AttributeError: Can't pickle local object")
    assert rank0[1][1].startswith("KeyboardInterrupt")
    for (name, said), (_, theirs) in zip(rank1, rank0):
        assert said == (
            f"RuntimeError: rank 0 could not write the checkpoint {tmp_path / name}.pt "
            f"(the failure of rank 0): {theirs}"
        )
    assert sorted(os.listdir(tmp_path)) == []  # no partial file, no sidecar


def make_saver_in_a_full_folder(folder):
    try:
        DiskSaver(folder)  # require_empty=True: the folder holds a checkpoint
    except BaseException as error:  # noqa: BLE001
        return f"{type(error).__name__}: {error}"
    return None


def test_require_empty_is_agreed_by_every_rank(ranks2, tmp_path):
    (tmp_path / "old.pt").write_bytes(b"x")
    rank0, rank1 = ranks2.run(make_saver_in_a_full_folder, str(tmp_path), timeout=30)
    assert rank0.startswith(f"ValueError: checkpoint folder {tmp_path} already holds ['old.pt']")
    assert rank1 == (
        f"RuntimeError: DiskSaver({str(tmp_path)!r}) could not be made (the failure of rank 0): "
        f"{rank0}"
    )


def slow_write(folder, write_s, timeout_s, group_timeout_s):
    """Rank 0's disk takes ``write_s`` per checkpoint; the process group waits
    ``group_timeout_s`` in a collective (``dist.timeout_s`` under the launcher)."""
    dist.distributed_c10d._set_pg_timeout(timedelta(seconds=group_timeout_s))
    saver = DiskSaver(folder, require_empty=False, timeout_s=timeout_s)
    write = saver._write

    def slow(*args):
        time.sleep(write_s)
        write(*args)

    saver._write = slow
    try:
        saver({"w": torch.arange(3.0)}, "slow.pt")
        return None
    except BaseException as error:  # noqa: BLE001
        return f"{type(error).__name__}: {error}"
    finally:
        dist.distributed_c10d._set_pg_timeout(timedelta(seconds=60))


def test_a_write_longer_than_the_process_group_timeout_is_waited_for(ranks2, tmp_path):
    assert ranks2.run(slow_write, str(tmp_path), 3.0, 60.0, 1.0, timeout=30) == [None, None]
    assert torch.load(tmp_path / "slow.pt", weights_only=True)["w"].tolist() == [0, 1, 2]


def test_a_write_longer_than_its_own_timeout_fails_every_rank_naming_it(ranks2, tmp_path):
    rank0, rank1 = ranks2.run(slow_write, str(tmp_path), 2.5, 1.0, 60.0, timeout=30)
    path = tmp_path / "slow.pt"
    assert rank0.startswith(f"TimeoutError: writing the checkpoint {path} took ")
    assert "longer than DiskSaver(timeout_s=1): the other ranks stopped waiting" in rank0
    assert rank1.startswith(
        f"TimeoutError: rank 0 did not finish writing the checkpoint {path} within "
        "DiskSaver(timeout_s=1) (the failure of rank 0): "
    )
    assert torch.load(path, weights_only=True)["w"].tolist() == [0, 1, 2]  # whole, as said
    # the next save waits in a new group: nothing late from the one that timed out is read
    assert ranks2.run(slow_write, str(tmp_path), 0.0, 1.0, 60.0, timeout=30) == [None, None]


class PerRankBig:
    checkpoint_per_rank = True

    def state_dict(self):
        return {"rank": dist.get_rank(), "data": torch.full((1000,), float(dist.get_rank()))}

    def load_state_dict(self, state):
        pass


def gather_per_rank_states():
    states = gather_states({"big": PerRankBig(), "model": nn.Linear(1, 1)})
    per_rank = states["big"]["__per_rank__"]
    return None if per_rank is None else [s["rank"] for s in per_rank]


def test_per_rank_states_are_gathered_to_rank_0_only(ranks2):
    assert ranks2.run(gather_per_rank_states) == [[0, 1], None]


def test_partial_writes_of_a_killed_process_are_removed_by_the_next_saver(tmp_path):
    leftovers = [".checkpoint_45.pt.1a2b3c4d.tmp", ".checkpoint_45.pt.meta.json.tmp"]
    mine = [".notes.tmp", "draft.tmp", ".checkpoint_45.pt.x.tmp"]
    for name in leftovers + mine:
        (tmp_path / name).write_bytes(b"partial")
    DiskSaver(tmp_path, require_empty=False)
    assert sorted(os.listdir(tmp_path)) == sorted(mine)  # only what a DiskSaver writes


# -- loading: damage, refusal or this process ----------------------------------------------


def saved(folder, name="checkpoint_10.pt", iteration=10):
    DiskSaver(folder, require_empty=False)(
        {"w": torch.arange(4.0)}, name, {"iteration": iteration, "run_id": "r"}
    )
    return Path(folder) / name


class Payload:
    """A pickle that would create a file when unpickled without weights_only."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_random_bytes_with_a_matching_crc_are_corrupt_not_refused(tmp_path):
    older = saved(tmp_path, "checkpoint_5.pt", 5)
    newest = saved(tmp_path)
    newest.write_bytes(os.urandom(4000))
    sidecar = json.loads(meta_path(newest).read_text())
    meta_path(newest).write_text(json.dumps({**sidecar, "crc32": file_checksum(newest)}))
    with pytest.raises(CorruptCheckpointError, match="neither a zip archive .* nor a pickle"):
        load_checkpoint_file(newest)
    reported = []
    found = find_latest_checkpoint(tmp_path, on_corrupt=lambda p, why: reported.append(p))
    assert found[0] == older and reported == [newest]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol 4")
def test_a_pickle_payload_without_a_sidecar_is_refused_intact_and_never_run(tmp_path):
    marker = tmp_path / "ran"
    for protocol in (2, 4):
        evil = tmp_path / f"evil{protocol}.pt"
        evil.write_bytes(pickle.dumps(Payload(marker), protocol=protocol))
        with pytest.raises(CheckpointLoadError, match=f"evil{protocol}.pt is intact but"):
            load_checkpoint_file(evil)
    zipped = tmp_path / "zipped.pt"
    torch.save({"x": Payload(marker)}, zipped)
    with pytest.raises(CheckpointLoadError, match="zipped.pt is intact but"):
        load_checkpoint_file(zipped)
    listed = dict(list_checkpoints(tmp_path, on_corrupt=pytest.fail))  # unknown run, not corrupt
    assert listed == {tmp_path / "evil2.pt": {}, tmp_path / "evil4.pt": {}, zipped: {}}
    assert not marker.exists()


def test_a_truncated_file_without_its_sidecar_is_corrupt(tmp_path):
    path = saved(tmp_path)
    path.write_bytes(path.read_bytes()[:1000])
    meta_path(path).unlink()
    with pytest.raises(CorruptCheckpointError, match="incomplete: it has no central directory"):
        load_checkpoint_file(path)


@pytest.mark.parametrize(
    "raised",
    [
        MemoryError(),
        PermissionError(13, "Permission denied"),
        ModuleNotFoundError("No module named 'numpy'", name="numpy"),
    ],
    ids=["memory", "permission", "module"],
)
def test_an_intact_file_that_fails_for_this_process_stays_and_stops(tmp_path, monkeypatch, raised):
    older = saved(tmp_path, "checkpoint_5.pt", 5)
    newest = saved(tmp_path)

    def failing(*args, **kwargs):
        raise raised

    monkeypatch.setattr(torch, "load", failing)
    reported = []
    with pytest.raises(CheckpointEnvironmentError, match="it was left where it is") as error:
        find_latest_checkpoint(tmp_path, on_corrupt=lambda p, why: reported.append(p))
    assert f"checkpoint {newest} is intact (its CRC-32 matches its sidecar)" in str(error.value)
    assert reported == [] and newest.is_file() and older.is_file()


MAPPING_REFUSED = """
import resource, sys
from distengine.checkpoint import CheckpointEnvironmentError, load_checkpoint_file
vm = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + 16 * 2**20, resource.RLIM_INFINITY))
try:
    load_checkpoint_file(sys.argv[1])
except CheckpointEnvironmentError as error:
    print(error)
"""


def test_a_mapping_refused_for_lack_of_address_space_is_not_corruption(tmp_path):
    """A real ``mmap`` failure: the address space is capped below the file's size."""
    DiskSaver(tmp_path)({"w": torch.zeros(16 * 2**20)}, "big.pt", {"iteration": 1})
    run = subprocess.run(
        [sys.executable, "-c", MAPPING_REFUSED, str(tmp_path / "big.pt")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    assert run.stdout.startswith(f"checkpoint {tmp_path / 'big.pt'} is intact (its CRC-32 "), (
        run.stdout + run.stderr
    )
    assert "Cannot allocate memory" in run.stdout and "free memory or address space" in run.stdout


def slow_shards(folder, write_s, group_timeout_s):
    """Rank 1 takes ``write_s`` longer for its shards than a collective may wait."""
    from distengine.checkpoint import ShardedStorage, gather_state
    from distengine.distributed.fsdp import shard_model

    dist.distributed_c10d._set_pg_timeout(timedelta(seconds=group_timeout_s))
    try:
        torch.manual_seed(0)
        model = shard_model(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)))
        storage = ShardedStorage(folder)
        written = storage._written

        def slow(pending):
            if dist.get_rank() == 1:
                time.sleep(write_s)
            return written(pending)

        storage._written = slow
        storage.save("checkpoint_1", *gather_state({"model": model}), {"iteration": 1})
        return sorted(os.listdir(folder))
    finally:
        dist.distributed_c10d._set_pg_timeout(timedelta(seconds=60))


def test_a_shard_write_longer_than_the_process_group_timeout_is_waited_for(ranks2, tmp_path):
    assert ranks2.run(slow_shards, str(tmp_path), 2.5, 1.0, timeout=60) == [["checkpoint_1"]] * 2
