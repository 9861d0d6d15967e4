"""Data to the GPU without stalls: pinned batches and non-blocking copies by default on CUDA.

A CUDA device is only named here (the steps run on the CPU with a ``prepare_batch``
that records what it was asked), so the defaults are checked on any machine.
"""

import pytest
import torch
from torch import nn

import distengine.distributed.auto as auto
from distengine.engine import create_supervised_evaluator, create_supervised_trainer

CUDA = torch.device("cuda", 0)


@pytest.mark.parametrize(
    "rank_device, given, pinned",
    [
        (CUDA, {}, True),
        (CUDA, {"pin_memory": False}, False),
        (torch.device("cpu"), {}, False),
        (torch.device("cpu"), {"pin_memory": True}, True),
    ],
)
def test_loaders_pin_memory_where_the_rank_computes_on_a_gpu(
    monkeypatch, rank_device, given, pinned
):
    monkeypatch.setattr(auto, "device", lambda: rank_device)
    for options in ({}, {"shuffle": True, "seed": 3}):
        loader = auto.auto_dataloader(list(range(8)), batch_size=4, **options, **given)
        assert loader.pin_memory is pinned


def recording(seen):
    def prepare_batch(batch, device, non_blocking):
        seen.append((device, non_blocking))
        return batch  # stays on the CPU: the model is there

    return prepare_batch


@pytest.mark.parametrize(
    "device, given, expected",
    [(CUDA, None, True), (CUDA, False, False), ("cpu", None, False), ("cpu", True, True)],
)
def test_steps_copy_non_blocking_by_default_on_cuda(device, given, expected):
    model = nn.Linear(3, 2)
    batch = (torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))
    seen = []
    options = {} if given is None else {"non_blocking": given}
    trainer = create_supervised_trainer(
        model,
        torch.optim.SGD(model.parameters(), 0.1),
        nn.CrossEntropyLoss(),
        device=device,
        prepare_batch=recording(seen),
        **options,
    )
    trainer.run([batch])
    evaluator = create_supervised_evaluator(
        model, device=device, prepare_batch=recording(seen), **options
    )
    evaluator.run([batch])
    assert seen == [(torch.device(device), expected)] * 2
    assert trainer.process_function.non_blocking is expected
