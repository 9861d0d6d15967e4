"""PyTorch-Ignite 0.5.5's own examples run on distengine with only their imports changed.

The examples come from Ignite's source distribution at test time
(:mod:`tests.ignite_compat.ignite_examples`; ``make setup`` downloads it, and a
missing archive fails these tests with what to run). The data is an offline
stand-in for torchvision (``offline/``). Each run uses the example's own
command-line flags to stay small: a few hundred images, two epochs.

The nine runs: ``mnist.py``, ``mnist_with_tensorboard.py``,
``mnist_with_tensorboard_logger.py``, ``mnist_save_resume_engine.py`` (a crash,
then a resume whose own logs equal the uninterrupted run's), and
``cifar10/main.py`` on one process, on 2 ranks spawned by
``idist.Parallel(backend="gloo", nproc_per_node=2)`` stopped with
``--stop_iteration``, resumed with ``--resume_from`` under ``torchrun``, and
under ``python -m launch``; the resumed run ends with the weights of the
uninterrupted one.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
import torch

from tests.ignite_compat import ignite_examples as ie
from tests.launcher.launching import launch

PY = sys.executable
MNIST = ["--epochs", "1", "--batch_size", "32", "--val_batch_size", "64"]


@pytest.fixture(scope="module")
def examples(tmp_path_factory) -> Path:
    """``mnist/`` and ``cifar10/`` from Ignite's sdist, imports changed (no sdist: fails)."""
    folder = tmp_path_factory.mktemp("ignite_examples")
    ie.extract("mnist", folder)
    ie.extract("cifar10", folder)
    return folder


def ran(result, *expected: str) -> str:
    """The output of a run that exited 0 and printed each of ``expected``."""
    assert result.returncode == 0, f"exit {result.returncode}:\n{result.stdout[-5000:]}"
    for text in expected:
        assert text in result.stdout, f"{text!r} not in:\n{result.stdout[-5000:]}"
    return result.stdout


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the event files in ``folder``: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found: dict[str, list[tuple[int, float]]] = {}
    for events in sorted(folder.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0, "histograms": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            found.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
        for tag in acc.Tags()["histograms"]:
            found.setdefault(tag, []).extend((e.step, 0.0) for e in acc.Histograms(tag))
    return found


def test_mnist(examples):
    out = ran(
        ie.run([PY, "mnist.py", *MNIST, "--log_interval", "4"], examples / "mnist"),
        "Training Results - Epoch: 1",
        "Validation Results - Epoch: 1",
        "COMPLETED took",
    )
    accuracy = float(re.search(r"Validation Results - Epoch: 1 Avg accuracy: ([\d.]+)", out)[1])
    assert 0.0 <= accuracy <= 1.0


def test_mnist_with_tensorboard(examples, tmp_path):
    ran(
        ie.run(
            [PY, "mnist_with_tensorboard.py", *MNIST, "--log_interval", "2", "--log_dir", tmp_path],
            examples / "mnist",
        ),
        "Validation Results - Epoch: 1",
    )
    logged = scalars(tmp_path)
    assert [step for step, _ in logged["training/loss"]] == [2, 4]  # 4 iterations
    assert logged["valdation/avg_accuracy"][0][0] == 1


def test_mnist_with_tensorboard_logger(examples, tmp_path):
    """Ignite's TensorBoard handler classes write Ignite's tags (100 iterations: the example logs
    every 100); GpuInfo raises RuntimeError without a GPU, which the example catches; the two
    best models are kept by ModelCheckpoint."""
    command = [PY, "mnist_with_tensorboard_logger.py", "--epochs", "2", "--batch_size", "4"]
    command += ["--val_batch_size", "64", "--log_dir", tmp_path]
    out = ran(ie.run(command, examples / "mnist", OFFLINE_TRAIN_SIZE="200"))  # 50 per epoch
    assert ("INFO: By default" in out) == (not torch.cuda.is_available())
    logged = scalars(tmp_path)
    for tag in ("training/accuracy", "training/loss", "validation/accuracy", "validation/loss"):
        assert [step for step, _ in logged[tag]] == [1, 2], tag
    for tag in ("training/batchloss", "lr/group_0", "weights_norm/fc1/weight"):
        assert [step for step, _ in logged[tag]] == [100], tag
    assert "weights_norm/fc2/weight" not in logged  # whitelist=["fc1"]
    assert {"weights/conv1/weight", "weights/conv2/bias"} <= set(logged)  # histograms
    assert "weights/fc1/weight" not in logged  # whitelist: "conv" in the name
    grads = {tag: values for tag, values in logged.items() if tag.startswith("grads_norm/")}
    assert len(grads) == 8 and all(value > 0 for ((_, value),) in grads.values())
    assert {t for t in logged if t.startswith("grads/")} == {"grads/fc2/weight"}
    best = sorted(p.name for p in tmp_path.glob("best_model_*.pt"))
    assert len(best) == 2 and all("validation_accuracy=" in name for name in best), best


def _log_lines(path: Path) -> dict[int, list[str]]:
    """The example's own log (``epoch | iteration: ...``): iteration -> its lines."""
    lines: dict[int, list[str]] = {}
    for line in path.read_text().splitlines():
        iteration = int(line.split("|")[1].split(":")[0])
        lines.setdefault(iteration, []).append(line)
    return lines


def test_mnist_save_resume_engine_resumes_exactly(examples, tmp_path):
    """Crash at iteration 7, resume from the epoch-1 checkpoint (loaded with torch.load's
    weights_only default): the resumed run logs the same batches, weights and gradients as
    the run that never stopped (no --deterministic needed)."""
    script = [PY, "mnist_save_resume_engine.py", "--epochs", "2", "--batch_size", "32"]
    script += ["--val_batch_size", "64", "--log_interval", "2"]
    folder = examples / "mnist"
    ran(ie.run([*script, "--log_dir", tmp_path / "whole"], folder), "Validation Results - Epoch: 2")
    crashed = ie.run([*script, "--log_dir", tmp_path / "cut", "--crash_iteration", "7"], folder)
    ran(crashed, "Exception: STOP at 7")  # the example prints the traceback and exits 0
    checkpoint = tmp_path / "cut" / "checkpoint_1.pt"
    resumed = [*script, "--log_dir", tmp_path / "cut", "--resume_from", checkpoint]
    ran(ie.run(resumed, folder), "Resume from the checkpoint", "Validation Results - Epoch: 2")
    whole = _log_lines(tmp_path / "whole" / "run.log")
    again = _log_lines(tmp_path / "cut" / "resume_run.log")
    assert sorted(again) == [5, 6, 7, 8]  # 4 iterations per epoch: all after the checkpoint
    for iteration, lines in again.items():
        assert lines == whole[iteration], iteration
        grads = re.search(r"grads/total:([\d.]+)", lines[2])
        assert grads is not None and float(grads[1]) > 0  # gradients, not an empty log


CIFAR = ["--num_epochs", "2", "--num_warmup_epochs", "1", "--batch_size", "32"]
CIFAR += ["--num_workers", "0", "--validate_every", "1", "--checkpoint_every", "2"]


@pytest.fixture(scope="module")
def cifar(examples, tmp_path_factory) -> tuple[Path, list[str]]:
    """The CIFAR10 example's folder and its common arguments (it needs ``fire``)."""
    assert importlib.util.find_spec("fire") is not None, (
        "Ignite's CIFAR10 example needs the fire package: `make setup` installs it "
        "(a dev extra), or pip install fire"
    )
    data = tmp_path_factory.mktemp("cifar_data")
    return examples / "cifar10", [*CIFAR, "--data_path", str(data)]


def _final_model(output: Path) -> dict[str, torch.Tensor]:
    (checkpoint,) = output.glob("resnet18_backend-gloo-2_*/training_checkpoint_8.pt")
    return torch.load(checkpoint, weights_only=True)["model"]


def test_cifar10_on_one_process(cifar, tmp_path):
    folder, args = cifar
    out = ran(
        ie.run([PY, "main.py", "run", *args, "--output_path", tmp_path], folder),
        "- Ignite version: 0.1.0",
        "Epoch[2] - Evaluation time",
        "Test metrics",
    )
    assert "Distributed setting" not in out
    (run,) = tmp_path.glob("resnet18_backend-None-1_*")
    assert (run / "training_checkpoint_8.pt").is_file()  # 4 iterations per epoch
    assert len(list(run.glob("best_model_2_test_accuracy=*.pt"))) == 1  # epochs > 2 // 2
    assert [step for step, _ in scalars(run)["test/Accuracy"]] == [1, 2, 2]


@pytest.fixture(scope="module")
def launched(cifar, tmp_path_factory) -> Path:
    """The example run uninterrupted by `python -m launch` on 2 ranks: its output folder.

    Its arguments follow ``--``, as a torchrun user types them.
    """
    folder, args = cifar
    tmp = tmp_path_factory.mktemp("launched")
    script_args = ["run", *args, "--backend", "gloo", "--output_path", str(tmp / "out")]
    result = launch(
        f"task.script={folder / 'main.py'}",
        "dist.nproc_per_node=2",
        f"hydra.run.dir={tmp / 'run'}",
        "--",
        *script_args,
        timeout=300,
        env=ie.example_env(),
    )
    assert result.returncode == 0, f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return tmp / "out"


def test_cifar10_under_the_launcher(launched):
    (run,) = launched.glob("resnet18_backend-gloo-2_*")  # 2 gloo ranks, one output folder
    assert (run / "training_checkpoint_8.pt").is_file()
    assert [step for step, _ in scalars(run)["test/Accuracy"]] == [1, 2, 2]  # rank 0 alone


def test_cifar10_spawned_stopped_then_resumed_under_torchrun(cifar, launched, tmp_path):
    """idist.Parallel spawns 2 gloo ranks from `python main.py`; --stop_iteration stops them
    (the checkpoint of iteration 2 stays); torchrun's 2 ranks resume from it and end with the
    weights of the uninterrupted 2-rank run."""
    folder, args = cifar
    spawn = [PY, "main.py", "run", *args, "--backend", "gloo", "--nproc_per_node", "2"]
    ran(
        ie.run([*spawn, "--stop_iteration", "3", "--output_path", tmp_path / "stopped"], folder),
        "world size: 2",
        "Stop training on 3 iteration",
    )
    (checkpoint,) = (tmp_path / "stopped").glob("resnet18_backend-gloo-2_stop-on-3/*_2.pt")
    torchrun = [Path(PY).parent / "torchrun", "--nproc_per_node=2", "main.py", "run", *args]
    torchrun += ["--backend", "gloo", "--output_path", tmp_path / "resumed"]
    ran(
        ie.run([*torchrun, "--resume_from", checkpoint], folder),
        "Resume from a checkpoint",
        "Epoch[2] - Evaluation time",
    )
    resumed, uninterrupted = _final_model(tmp_path / "resumed"), _final_model(launched)
    for name, tensor in uninterrupted.items():
        assert torch.equal(tensor, resumed[name]), name
