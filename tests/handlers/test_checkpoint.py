"""Checkpoint and DiskSaver: retention, atomic writes, loading, exact resume."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from distengine.engine import Engine, Events, create_supervised_trainer
from distengine.handlers import Checkpoint, DiskSaver, find_latest_checkpoint


def visible(folder):
    """The checkpoint files a user sees (checksums are hidden files beside them)."""
    return sorted(name for name in os.listdir(folder) if not name.startswith("."))


def fake_engine(epoch=0, iteration=0):
    engine = Engine(lambda e, b: b)
    engine.state.epoch, engine.state.iteration = epoch, iteration
    engine.last_event_name = Events.EPOCH_COMPLETED
    return engine


def test_keeps_the_latest_n_by_step(tmp_path):
    model = nn.Linear(2, 2)
    checkpoint = Checkpoint({"model": model}, tmp_path, n_saved=2)
    for epoch in range(1, 5):
        checkpoint(fake_engine(epoch=epoch))
    assert visible(tmp_path) == ["model_3.pt", "model_4.pt"]
    assert sorted(n for n in os.listdir(tmp_path) if n.startswith(".")) == [
        ".model_3.pt.crc32",
        ".model_4.pt.crc32",
    ]  # removed together with their files
    assert checkpoint.last_checkpoint == "model_4.pt"


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
        "best_checkpoint_2_acc=0.9000.pt",
        "best_checkpoint_5_acc=0.9500.pt",
        "user_notes.pt",
    ]


def test_require_empty_and_bad_arguments(tmp_path):
    (tmp_path / "old.pt").write_bytes(b"x")
    with pytest.raises(ValueError, match="already holds \\['old.pt'\\]"):
        DiskSaver(tmp_path)
    with pytest.raises(ValueError, match="n_saved must be a positive int"):
        Checkpoint({"m": nn.Linear(1, 1)}, tmp_path, n_saved=0)
    with pytest.raises(TypeError, match=r"to_save\['x'\] is a int, which has no state_dict"):
        Checkpoint({"x": 3}, tmp_path)


def test_ddp_like_wrapped_model_is_saved_unwrapped(tmp_path):
    inner = nn.Linear(3, 1)
    wrapped = nn.DataParallel(inner)
    Checkpoint({"model": wrapped}, tmp_path)(fake_engine(epoch=1))
    state = torch.load(tmp_path / "model_1.pt", weights_only=True)
    plain = nn.Linear(3, 1)
    plain.load_state_dict(state["model"])  # always keyed by name, even for one object
    assert torch.equal(plain.weight, inner.weight)


def test_load_objects_errors_name_the_keys_and_the_file(tmp_path):
    Checkpoint({"model": nn.Linear(2, 2)}, tmp_path)(fake_engine(epoch=1))
    with pytest.raises(KeyError, match=r"lacks \['optimizer'\]; it holds \['model'\]"):
        Checkpoint.load_objects(
            {"optimizer": torch.optim.SGD(nn.Linear(2, 2).parameters(), 0.1)},
            tmp_path / "model_1.pt",
        )
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="broken.pt is corrupt or truncated"):
        Checkpoint.load_objects({"model": nn.Linear(2, 2)}, tmp_path / "broken.pt")


def test_find_latest_skips_a_truncated_file(tmp_path):
    model = nn.Linear(4, 4)
    checkpoint = Checkpoint({"model": model}, tmp_path, n_saved=3)
    checkpoint(fake_engine(epoch=1))
    checkpoint(fake_engine(epoch=2))
    data = (tmp_path / "model_2.pt").read_bytes()
    (tmp_path / "model_2.pt").write_bytes(data[: len(data) // 2])
    with pytest.warns(RuntimeWarning, match="model_2.pt is corrupt"):
        path, state = find_latest_checkpoint(tmp_path)
    assert path.name == "model_1.pt" and torch.equal(state["model"]["weight"], model.weight)
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
    path = tmp_path / "model_1.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # torch.load alone would not notice this
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="model_1.pt is corrupt: its CRC-32 differs"):
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
    assert visible(tmp_path) == ["model-e2-acc0.50.pt"]  # equal score replaced; lower kept out
    saved = torch.load(tmp_path / "model-e2-acc0.50.pt", weights_only=True)
    assert saved["checkpointer"]["saved"] == [[0.5, "model-e2-acc0.50.pt"]]
    restored = Checkpoint({"model": nn.Linear(2, 2)}, tmp_path, n_saved=1)
    restored.load_state_dict(saved["checkpointer"])
    assert restored.saved == [(0.5, "model-e2-acc0.50.pt")]
