"""scikit-learn's digits as train/validation datasets (shipped with the package, no download)."""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

#: scikit-learn's digits: how many, and the features of each (8x8 pixels).
DIGITS_SAMPLES, DIGITS_FEATURES = 1797, 64


def split_sizes(val_fraction: float) -> tuple[int, int]:
    """(training, validation) sample counts of :func:`digits` with ``val_fraction``."""
    held_out = int(DIGITS_SAMPLES * val_fraction)
    return DIGITS_SAMPLES - held_out, held_out


def check_digits(
    val_fraction: float = 0.2, split_seed: int = 0, image: bool = False, batch_size: int = 64
) -> None:
    """Refuse :func:`digits` arguments the recipe cannot use (a ValueError naming the key):
    a validation set without a sample, a global batch larger than the training set (every
    rank's epoch would be empty).

    The launcher calls it before any rank starts (see ``launch.config.targets``).

    Example::

        check_digits(batch_size=3000)
        # ValueError: data.batch_size=3000: more than the 1438 training samples ...
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"data.val_fraction={val_fraction!r}: expected a number in (0, 1)")
    if batch_size < 1:
        raise ValueError(f"data.batch_size={batch_size!r}: expected a positive int")
    train, held_out = split_sizes(val_fraction)
    if held_out < 1:
        raise ValueError(
            f"data.val_fraction={val_fraction!r} holds out no sample of the {DIGITS_SAMPLES} "
            "digits (the validation would be empty): expected a fraction that holds out one "
            "or more (0.001 or more)"
        )
    if batch_size > train:
        raise ValueError(
            f"data.batch_size={batch_size!r}: more than the {train} training samples "
            f"(data.val_fraction={val_fraction!r} holds out {held_out} of the {DIGITS_SAMPLES} "
            f"digits), so an epoch would have no batch: expected at most {train}"
        )


def digits(
    val_fraction: float = 0.2, split_seed: int = 0, image: bool = False, batch_size: int = 64
) -> tuple[TensorDataset, TensorDataset]:
    """(train, validation) with a fixed split; pixels scaled to [0, 1].

    ``batch_size`` is read by the recipe (the global batch), not used here.
    """
    from sklearn.datasets import load_digits

    check_digits(val_fraction, split_seed, image, batch_size)
    bunch = load_digits()
    x = torch.tensor(bunch.data, dtype=torch.float32) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.int64)
    if image:
        x = x.view(-1, 1, 8, 8)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(split_seed))
    n_val = split_sizes(val_fraction)[1]
    val, train = order[:n_val], order[n_val:]
    return TensorDataset(x[train], y[train]), TensorDataset(x[val], y[val])


digits.check_arguments = check_digits  # what the launcher checks before any rank starts
