"""Checkpoint and DiskSaver: retention, sidecars, atomic writes, loading, exact resume."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from distengine.checkpoint import CheckpointLoadError, list_checkpoints, read_meta
from distengine.engine import Engine, Events, create_supervised_trainer
from distengine.handlers import Checkpoint, DiskSaver, find_latest_checkpoint


def visible(folder):
    """The checkpoint files a user sees (sidecars are hidden files beside them)."""
    return sorted(name for name in os.listdir(folder) if not name.startswith("."))


def fake_engine(epoch=0, iteration=None):
    """An engine at the end of ``epoch`` of 10 iterations (or at ``iteration``)."""
    engine = Engine(lambda e, b: b)
    engine.state.epoch = epoch
    engine.state.iteration = 10 * epoch if iteration is None else iteration
    engine.last_event_name = Events.EPOCH_COMPLETED
    return engine


def test_keeps_the_latest_n_named_by_iteration_with_sidecars(tmp_path):
    model = nn.Linear(2, 2)
    checkpoint = Checkpoint({"model": model}, tmp_path, n_saved=2, metadata={"run": "a"})
    for epoch in range(1, 5):
        checkpoint(fake_engine(epoch=epoch))
    assert visible(tmp_path) == ["model_30.pt", "model_40.pt"]
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith(".")) == [
        ".model_30.pt.meta.json",
        ".model_40.pt.meta.json",
    ]  # removed together with their files
    assert checkpoint.last_checkpoint == tmp_path / "model_40.pt"
    meta = read_meta(tmp_path / "model_40.pt")
    assert meta.pop("crc32") and meta == {
        "iteration": 40,
        "epoch": 4,
        "world_size": 1,
        "step": 40,
        "basename": "model",
        "score_name": None,
        "priority": 40,
        "run": "a",
    }


def test_keeps_the_best_n_by_score_and_never_touches_other_files(tmp_path):
    (tmp_path / "user_notes.pt").write_bytes(b"mine")
    scores = iter([0.5, 0.9, 0.7, 0.6, 0.95])
    checkpoint = Checkpoint(
        {"model": nn.Linear(2, 2), "opt": torch.optim.SGD(nn.Linear(2, 2).parameters(), 0.1)},
        DiskSaver(tmp_path, require_empty=False),
        filename_prefix="best",
        score_function=lambda e: next(scores),
        score_name="acc",
        n_saved=2,
    )
    for epoch in range(1, 6):
        checkpoint(fake_engine(epoch=epoch))
    assert visible(tmp_path) == [
        "best_checkpoint_20_acc=0.9000.pt",
        "best_checkpoint_50_acc=0.9500.pt",
        "user_notes.pt",
    ]
    assert read_meta(tmp_path / "best_checkpoint_50_acc=0.9500.pt")["score"] == 0.95


def test_require_empty_and_bad_arguments(tmp_path):
    (tmp_path / "old.pt").write_bytes(b"x")
    with pytest.raises(ValueError, match="already holds \\['old.pt'\\]"):
        DiskSaver(tmp_path)
    with pytest.raises(ValueError, match="n_saved must be a positive int"):
        Checkpoint({"m": nn.Linear(1, 1)}, tmp_path, n_saved=0)
    with pytest.raises(TypeError, match=r"to_save\['x'\] is a int, which has no state_dict"):
        Checkpoint({"x": 3}, tmp_path)
    with pytest.raises(ValueError, match=r"metadata keys \['iteration'\] are recorded by"):
        Checkpoint({"m": nn.Linear(1, 1)}, tmp_path, metadata={"iteration": 3})
    with pytest.raises(TypeError, match="metadata must be a dict or a function of the engine"):
        Checkpoint({"m": nn.Linear(1, 1)}, tmp_path, metadata="run-1")
    bad = Checkpoint({"m": nn.Linear(1, 1)}, tmp_path / "b", metadata=lambda e: {"t": object()})
    with pytest.raises(TypeError, match="metadata must be JSON-serialisable"):
        bad(fake_engine(epoch=1))
    assert visible(tmp_path / "b") == []  # nothing written: whole or not at all


def test_ddp_like_wrapped_model_is_saved_unwrapped(tmp_path, cpu_only):
    inner = nn.Linear(3, 1)
    wrapped = nn.DataParallel(inner)  # on the CPU (cpu_only): with CUDA it moves to cuda:0
    Checkpoint({"model": wrapped}, tmp_path)(fake_engine(epoch=1))
    state = torch.load(tmp_path / "model_10.pt", weights_only=True)
    plain = nn.Linear(3, 1)
    plain.load_state_dict(state["model"])  # always keyed by name, even for one object
    assert torch.equal(plain.weight, inner.weight)


def test_load_objects_errors_name_the_keys_and_the_file(tmp_path):
    Checkpoint({"model": nn.Linear(2, 2)}, tmp_path)(fake_engine(epoch=1))
    with pytest.raises(KeyError, match=r"lacks \['optimizer'\]; it holds \['model'\]"):
        Checkpoint.load_objects(
            {"optimizer": torch.optim.SGD(nn.Linear(2, 2).parameters(), 0.1)},
            tmp_path / "model_10.pt",
        )
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="broken.pt is corrupt: it is neither a zip archive"):
        Checkpoint.load_objects({"model": nn.Linear(2, 2)}, tmp_path / "broken.pt")


def test_find_latest_skips_a_truncated_file(tmp_path):
    model = nn.Linear(4, 4)
    checkpoint = Checkpoint({"model": model}, tmp_path, n_saved=3)
    checkpoint(fake_engine(epoch=1))
    checkpoint(fake_engine(epoch=2))
    data = (tmp_path / "model_20.pt").read_bytes()
    (tmp_path / "model_20.pt").write_bytes(data[: len(data) // 2])
    with pytest.warns(RuntimeWarning, match="model_20.pt is corrupt"):
        path, state = find_latest_checkpoint(tmp_path)
    assert path.name == "model_10.pt" and torch.equal(state["model"]["weight"], model.weight)
    reported = []
    path, _ = find_latest_checkpoint(tmp_path, on_corrupt=lambda p, why: reported.append((p, why)))
    assert path.name == "model_10.pt" and [p.name for p, _ in reported] == ["model_20.pt"]
    assert "CRC-32 differs" in reported[0][1]
    assert find_latest_checkpoint(tmp_path / "missing") is None


WRITER = """
import sys, torch
from distengine.handlers import DiskSaver
saver = DiskSaver(sys.argv[1], require_empty=False)
big = {"w": torch.randn(4_000_000)}
print("ready", flush=True)
while True:
    saver(big, "model.pt")
"""


def test_a_save_killed_mid_write_leaves_the_previous_checkpoint_loadable(tmp_path):
    good = {"w": torch.arange(10.0)}
    DiskSaver(tmp_path)(good, "model.pt")
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(0.5)  # several 16 MB writes are under way
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        proc.kill()
    state = torch.load(tmp_path / "model.pt", weights_only=True)  # never a partial file
    assert state["w"].numel() in (10, 4_000_000)
    assert visible(tmp_path) == ["model.pt"]


def test_a_flipped_bit_is_caught_by_the_checksum(tmp_path):
    Checkpoint({"model": nn.Linear(64, 64)}, tmp_path)(fake_engine(epoch=1))
    path = tmp_path / "model_10.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # torch.load alone would not notice this
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="model_10.pt is corrupt: its CRC-32 differs"):
        Checkpoint.load_objects({"model": nn.Linear(64, 64)}, path)


def make_run():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.2), nn.Linear(8, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    trainer = create_supervised_trainer(model, optimizer, nn.CrossEntropyLoss())
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(40, 4, generator=g), torch.randint(0, 2, (40,), generator=g)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=8, shuffle=True
    )
    return model, optimizer, trainer, loader


@pytest.mark.parametrize("stop_at", [7, 10])  # mid-epoch and at an epoch boundary
def test_resume_from_a_checkpoint_reproduces_the_uninterrupted_weights(tmp_path, stop_at):
    model, _, trainer, loader = make_run()
    trainer.run(loader, max_epochs=4)
    expected = [p.detach().clone() for p in model.parameters()]

    model, optimizer, trainer, loader = make_run()
    to_save = {"model": model, "optimizer": optimizer, "trainer": trainer}
    checkpoint = Checkpoint(to_save, tmp_path, n_saved=1)
    trainer.add_event_handler(Events.ITERATION_COMPLETED(every=1), checkpoint)
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=stop_at), lambda e: e.terminate())
    trainer.run(loader, max_epochs=4)

    torch.manual_seed(999)  # a new process: other random state, fresh objects
    model, optimizer, trainer, loader = make_run()
    path, state = find_latest_checkpoint(tmp_path)
    assert path.name == f"checkpoint_{stop_at}.pt"
    Checkpoint.load_objects({"model": model, "optimizer": optimizer, "trainer": trainer}, state)
    trainer.run(loader)
    for got, want in zip(model.parameters(), expected):
        assert torch.equal(got, want)


def test_filename_pattern_include_self_and_greater_or_equal(tmp_path):
    scores = iter([0.5, 0.5, 0.4])
    checkpoint = Checkpoint(
        {"model": nn.Linear(2, 2)},
        tmp_path,
        score_function=lambda e: next(scores),
        score_name="acc",
        n_saved=1,
        include_self=True,
        greater_or_equal=True,
        filename_pattern="{name}-e{global_step}-{score_name}{score:.2f}.{ext}",
    )
    for epoch in (1, 2, 3):
        checkpoint(fake_engine(epoch=epoch))
    assert visible(tmp_path) == ["model-e20-acc0.50.pt"]  # equal score replaced; lower kept out
    saved = torch.load(tmp_path / "model-e20-acc0.50.pt", weights_only=True)
    assert saved["checkpointer"]["saved"] == [[0.5, "model-e20-acc0.50.pt"]]
    restored = Checkpoint({"model": nn.Linear(2, 2)}, tmp_path, n_saved=1)
    restored.load_state_dict(saved["checkpointer"])
    assert restored.saved == [(0.5, "model-e20-acc0.50.pt")]
    assert restored.last_checkpoint == tmp_path / "model-e20-acc0.50.pt"


# ------------------------------------------------------------------ newest, legacy, refused
def saved_at(folder, iteration, name, **extra):
    """A checkpoint of a model whose weight is ``iteration``, as saved at that iteration."""
    model = nn.Linear(1, 1)
    nn.init.constant_(model.weight, float(iteration))
    step = (lambda e, _: extra.pop("step")) if "step" in extra else None
    checkpoint = Checkpoint(
        {"model": model},
        folder,
        n_saved=None,
        global_step_transform=step,
        filename_pattern=name,
        metadata=extra or None,
    )
    checkpoint(fake_engine(epoch=1, iteration=iteration))
    return folder / name


def weight_of(found):
    return found[1]["model"]["weight"].item()


def test_newest_is_the_highest_stored_iteration_not_the_number_in_the_name(tmp_path):
    saved_at(tmp_path, 30, "checkpoint_3.pt")  # epoch 3 at iteration 30
    stale = saved_at(tmp_path, 6, "checkpoint_6.pt")  # iteration 6, written later
    os.utime(stale, (time.time() + 100, time.time() + 100))
    assert weight_of(find_latest_checkpoint(tmp_path)) == 30.0
    saved_at(tmp_path, 30, "checkpoint_30b.pt")  # same iteration: the newer file wins
    os.utime(tmp_path / "checkpoint_30b.pt", (time.time() + 200, time.time() + 200))
    assert find_latest_checkpoint(tmp_path)[0].name == "checkpoint_30b.pt"


def test_where_filters_by_the_sidecar_metadata(tmp_path):
    saved_at(tmp_path, 50, "a.pt", run="other")
    saved_at(tmp_path, 20, "b.pt", run="mine")
    assert weight_of(find_latest_checkpoint(tmp_path)) == 50.0
    mine = find_latest_checkpoint(tmp_path, where=lambda meta: meta.get("run") == "mine")
    assert weight_of(mine) == 20.0
    assert find_latest_checkpoint(tmp_path, where=lambda meta: False) is None


class RunRecord:
    """The record of its run saved in each checkpoint, as the launcher's recipe saves one."""

    def __init__(self, run_id):
        self.run_id = run_id

    def state_dict(self):
        return {"run_id": self.run_id, "world_size": 1, "config": {"lr": 0.1}}

    def load_state_dict(self, state):
        self.run_id = state["run_id"]


@pytest.mark.parametrize("damage", ["removed", "garbage", "empty object"])
def test_a_file_without_a_usable_sidecar_tells_its_run_from_its_own_contents(tmp_path, damage):
    for iteration, run in ((50, "other"), (40, "mine"), (44, "mine")):
        model = nn.Linear(1, 1)
        nn.init.constant_(model.weight, float(iteration))
        to_save = {"model": model, "run": RunRecord(run)}
        checkpoint = Checkpoint(to_save, tmp_path, n_saved=None, metadata={"run_id": run})
        checkpoint(fake_engine(epoch=1, iteration=iteration))
    sidecar = tmp_path / ".checkpoint_44.pt.meta.json"
    {
        "removed": sidecar.unlink,
        "garbage": lambda: sidecar.write_bytes(b"\x00{garbage"),
        "empty object": lambda: sidecar.write_text("{}"),
    }[damage]()
    found = find_latest_checkpoint(tmp_path, where=lambda meta: meta.get("run_id") == "mine")
    assert found[0].name == "checkpoint_44.pt" and weight_of(found) == 44.0
    listed = {path.name: meta for path, meta in list_checkpoints(tmp_path)}
    assert listed["checkpoint_44.pt"]["run_id"] == "mine"
    assert listed["checkpoint_50.pt"]["run_id"] == "other"


@pytest.mark.parametrize("key", ["step", "score", "basename", "score_name", "priority"])
def test_metadata_may_not_override_what_checkpoint_computes(tmp_path, key):
    with pytest.raises(ValueError, match=rf"metadata keys \['{key}'\] are recorded by") as info:
        Checkpoint({"m": nn.Linear(1, 1)}, tmp_path, metadata={key: 1})
    assert "\n" not in str(info.value)
    later = Checkpoint({"m": nn.Linear(1, 1)}, tmp_path, metadata=lambda engine: {key: 1})
    with pytest.raises(ValueError, match=rf"metadata keys \['{key}'\] are recorded by"):
        later(fake_engine(epoch=1))
    assert visible(tmp_path) == []


@pytest.mark.parametrize("sidecar", ["crc32", "none"])
def test_files_of_earlier_versions_still_load_and_order_by_their_own_iteration(tmp_path, sidecar):
    """Before the metadata sidecar: a ``.crc32`` file, or nothing; the engine's state in the
    file says the iteration (its per-rank part in the old layout)."""
    for iteration, name in ((40, "checkpoint_4.pt"), (9, "checkpoint_9.pt")):
        engine_state = {"iteration": iteration, "epoch": 1, "per_rank": [{"rng": None}]}
        torch.save({"trainer": engine_state, "w": torch.tensor(float(iteration))}, tmp_path / name)
        if sidecar == "crc32":
            from distengine.handlers.disk_saver import file_checksum

            (tmp_path / f".{name}.crc32").write_text(file_checksum(tmp_path / name))
    path, state = find_latest_checkpoint(tmp_path)
    assert path.name == "checkpoint_4.pt" and state["w"].item() == 40.0
    if sidecar == "crc32":
        data = bytearray((tmp_path / "checkpoint_4.pt").read_bytes())
        data[len(data) // 2] ^= 0x01
        (tmp_path / "checkpoint_4.pt").write_bytes(bytes(data))
        with pytest.warns(RuntimeWarning, match="checkpoint_4.pt is corrupt: its CRC-32 differs"):
            assert find_latest_checkpoint(tmp_path)[0].name == "checkpoint_9.pt"


class Opaque:
    """Not a tensor or a plain value: weights_only loading refuses it."""


@pytest.mark.parametrize("sidecar", [True, False])
def test_an_intact_file_that_weights_only_refuses_raises_instead_of_being_skipped(
    tmp_path, sidecar
):
    saved_at(tmp_path, 10, "old.pt")
    if sidecar:
        DiskSaver(tmp_path, require_empty=False)({"x": Opaque()}, "new.pt", {"iteration": 20})
    else:
        torch.save({"x": Opaque(), "trainer": {"iteration": 20, "epoch": 2}}, tmp_path / "new.pt")
    with pytest.raises(CheckpointLoadError, match=r"new.pt is intact.*Unsupported global"):
        find_latest_checkpoint(tmp_path)
    with pytest.raises(CheckpointLoadError, match="weights_only=True\\) refuses it"):
        Checkpoint.load_objects({"model": nn.Linear(1, 1)}, tmp_path / "new.pt")


@pytest.mark.parametrize("atomic", [True, False])
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_saved_files_respect_the_umask(tmp_path, atomic, umask):
    previous = os.umask(umask)
    try:
        DiskSaver(tmp_path, atomic=atomic)({"w": torch.zeros(1)}, "model.pt")
    finally:
        os.umask(previous)
    for name in ("model.pt", ".model.pt.meta.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


class PerRank:
    """A stateful object whose state differs per rank."""

    checkpoint_per_rank = True

    def __init__(self, n=0):
        self.n = n

    def state_dict(self):
        return {"n": torch.tensor(self.n)}

    def load_state_dict(self, state):
        self.n = int(state["n"])


class PerRankResharding(PerRank):
    def load_per_rank_state_dicts(self, states):
        self.n = sum(int(s["n"]) for s in states)


def test_per_rank_objects_are_saved_as_every_ranks_state_and_refused_across_world_sizes(
    tmp_path,
):
    Checkpoint({"counter": PerRank(7), "model": nn.Linear(1, 1)}, tmp_path)(fake_engine(1))
    saved = torch.load(tmp_path / "checkpoint_10.pt", weights_only=True)
    assert saved["counter"] == {"__per_rank__": [{"n": torch.tensor(7)}]}
    assert "__per_rank__" not in saved["model"]
    restored = PerRank()
    Checkpoint.load_objects({"counter": restored}, saved)
    assert restored.n == 7
    two_ranks = {"counter": {"__per_rank__": [{"n": torch.tensor(1)}, {"n": torch.tensor(2)}]}}
    with pytest.raises(ValueError, match=r"entry 'counter' holds per-rank states of 2 rank\(s\) "):
        Checkpoint.load_objects({"counter": PerRank()}, two_ranks)
    resharded = PerRankResharding()
    Checkpoint.load_objects({"counter": resharded}, two_ranks)
    assert resharded.n == 3


def test_the_engine_is_saved_per_rank_with_no_special_case(tmp_path):
    trainer = Engine(lambda e, b: b)
    trainer.run(range(4), max_epochs=2)
    Checkpoint({"trainer": trainer}, tmp_path)(trainer)
    saved = torch.load(tmp_path / "trainer_8.pt", weights_only=True)
    assert [s["iteration"] for s in saved["trainer"]["__per_rank__"]] == [8]
    fresh = Engine(lambda e, b: b)
    Checkpoint.load_objects({"trainer": fresh}, saved)
    assert (fresh.state.iteration, fresh.state.epoch) == (8, 2)


def test_saves_pause_the_hang_watchdog(tmp_path):
    from distengine.handlers import watchdog

    seen = []

    class Probe(PerRank):
        def state_dict(self):
            seen.append(watchdog._suspensions)
            return super().state_dict()

    Checkpoint({"probe": Probe()}, tmp_path)(fake_engine(1))
    assert seen == [1] and watchdog._suspensions == 0


def test_a_plain_callable_saver_gets_two_arguments_and_last_checkpoint_is_its_name():
    written = {}
    checkpoint = Checkpoint({"m": nn.Linear(1, 1)}, lambda ckpt, name: written.update({name: 1}))
    checkpoint(fake_engine(2))
    assert list(written) == ["m_20.pt"] and checkpoint.last_checkpoint == "m_20.pt"  # as Ignite
    assert json.loads(json.dumps(checkpoint.state_dict())) == {
        "saved": [[20.0, "m_20.pt"]],
        "last": "m_20.pt",
    }
