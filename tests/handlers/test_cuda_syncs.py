"""On a GPU, no host-device sync per iteration: torch's own sync detector says so.

``torch.cuda.set_sync_debug_mode("warn")`` makes every synchronising CUDA call
(``.item()`` of a device tensor, a blocking copy, ``nonzero``...) warn; each
warning is recorded with the trainer's iteration and event. Skipped without CUDA.
"""

import contextlib
import warnings

import pytest
import torch

from distengine.engine import Engine, Events
from tests.handlers.test_typical_loop import typical_loop

pytestmark = pytest.mark.gpu
DEVICE = "cuda"


@contextlib.contextmanager
def syncs_recorded(found: list, where=lambda: None):
    """Record ``(where(), message)`` for every synchronising CUDA call inside the block."""
    previous = torch.cuda.get_sync_debug_mode()

    def record(message, category, *args, **kwargs):
        if "synchroniz" in str(message):
            found.append((where(), str(message).splitlines()[0]))

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield
        finally:
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode(previous)


def test_the_typical_loop_syncs_nowhere_in_its_iterations():
    """Running loss, progress bar, a handler every 100 iterations, TerminateOnNan and
    Preemption on one GPU: outputs, flags and averages stay on the device; the agreed
    exchanges are read through an event, which the detector would name if it synced."""
    found = []

    def watch(trainer):
        return syncs_recorded(found, lambda: (trainer.state.iteration, trainer.last_event_name))

    typical_loop(10, 40, 2, device=DEVICE, redraw_s=3600.0, watch=watch)
    in_iterations = [
        (where, message)
        for where, message in found
        if where[1] in (Events.ITERATION_STARTED, Events.ITERATION_COMPLETED)
    ]
    assert in_iterations == []


def test_metric_updates_sync_nowhere():
    """Six metrics, given their number of classes, fed 50 batches of 4096x10 on the GPU."""
    from distengine.metrics import (
        Accuracy,
        ConfusionMatrix,
        Loss,
        Precision,
        Recall,
        TopKCategoricalAccuracy,
    )

    g = torch.Generator().manual_seed(0)
    batches = [
        (torch.randn(4096, 10, generator=g).to(DEVICE), torch.randint(0, 10, (4096,)).to(DEVICE))
        for _ in range(50)
    ]
    evaluator = Engine(lambda engine, batch: batch)
    metrics = {
        "accuracy": Accuracy(),
        "loss": Loss(torch.nn.functional.cross_entropy),
        "precision": Precision(average="macro", num_classes=10),
        "recall": Recall(average="macro", num_classes=10),
        "confusion": ConfusionMatrix(10),
        "top3": TopKCategoricalAccuracy(3),
    }
    for name, metric in metrics.items():
        metric.attach(evaluator, name)
    evaluator.run(batches[:2])  # warm-up: first calls may set things up
    found = []
    with syncs_recorded(found, lambda: evaluator.last_event_name):
        evaluator.run(batches)
    per_batch = [
        (where, message)
        for where, message in found
        if where in (Events.ITERATION_STARTED, Events.ITERATION_COMPLETED)
    ]
    assert per_batch == []
    assert 0 <= evaluator.state.metrics["accuracy"] <= 1  # computed (syncs allowed there)
