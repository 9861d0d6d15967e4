"""Names Ignite users import from ``ignite.exceptions`` and ``ignite.utils``."""

import random

import numpy as np
import pytest
import torch

import distengine.metrics
from distengine.exceptions import NotComputableError
from distengine.utils import apply_to_type, convert_tensor, manual_seed, to_onehot


def test_not_computable_error_is_one_class_wherever_imported():
    assert NotComputableError is distengine.metrics.NotComputableError
    with pytest.raises(NotComputableError):
        distengine.metrics.Accuracy().compute()


def test_manual_seed_seeds_torch_random_and_numpy():
    draws = []
    for _ in range(2):
        manual_seed(7)
        draws.append((torch.rand(2).tolist(), random.random(), np.random.rand()))
    assert draws[0] == draws[1]


def test_tensor_helpers():
    onehot = to_onehot(torch.tensor([[0, 2], [1, 1]]), 3)
    assert onehot.dtype == torch.uint8 and onehot.shape == (2, 3, 2)
    assert onehot.argmax(1).tolist() == [[0, 2], [1, 1]]
    moved = convert_tensor({"x": [torch.zeros(1)], "name": "a"}, "meta")
    assert moved["x"][0].device.type == "meta" and moved["name"] == "a"
    assert apply_to_type((1, [2, "s"]), int, lambda v: v * 10) == (10, [20, "s"])
    with pytest.raises(ValueError, match="num_classes must be an int >= 1"):
        to_onehot(torch.tensor([0]), 0)
