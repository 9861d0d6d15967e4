"""The character error rate of predicted strings against reference strings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from distengine.metrics.metric import Metric
from distengine.metrics.state import no_examples

__all__ = ["CharacterErrorRate"]


def edit_distance(ref: str, pred: str) -> int:
    """The Levenshtein distance: the fewest insertions, deletions and substitutions of
    characters that turn ``ref`` into ``pred``.

    Example::

        edit_distance("kitten", "sitting")   # 3
    """
    previous = list(range(len(pred) + 1))
    for i, r in enumerate(ref, 1):
        current = [i]
        for j, p in enumerate(pred, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != p)))
        previous = current
    return previous[-1]


class CharacterErrorRate(Metric):
    """Character edits (Levenshtein) from each reference ``y`` to its prediction ``y_pred``,
    over all characters of the references: 0 is perfect; 1.0 when the references are empty
    but the predictions are not.

    ``(y_pred, y)`` are two strings or two lists of strings of the same length. The counts are
    added on the host (no device work) and across ranks with the engine's other metrics.

    Example::

        cer = CharacterErrorRate()
        cer.update((["helo", "cat"], ["hello", "bat"]))
        cer.compute()   # 2 edits / 8 characters = 0.25
    """

    def __init__(
        self,
        output_transform: Callable[[Any], Any] = lambda output: output,
        device: str | torch.device | None = None,
        skip_unrolling: bool = False,
    ) -> None:
        super().__init__(output_transform, device, skip_unrolling)
        for name in ("_num_errors", "_num_refs", "_num_examples"):
            self.add_state(name, torch.tensor(0))

    def update(self, output: Any) -> None:
        y_pred, y = output[0], output[1]
        if not isinstance(y_pred, (str, list)) or not isinstance(y, (str, list)):
            raise TypeError(
                "y_pred and y must be str or list[str], got y_pred: "
                f"{type(y_pred)} and y: {type(y)}"
            )
        if isinstance(y_pred, str) and isinstance(y, str):
            y_pred, y = [y_pred], [y]
        if not all(isinstance(s, str) for s in [*y_pred, *y]):
            raise TypeError("All elements of y_pred and y must be strings.")
        if len(y_pred) != len(y):
            raise ValueError(
                "y_pred and y must have the same length. Got y_pred of length "
                f"{len(y_pred)} and y of length {len(y)}."
            )
        self.tally("_num_errors", sum(edit_distance(r, p) for p, r in zip(y_pred, y)))
        self.tally("_num_refs", sum(len(r) for r in y))
        self.tally("_num_examples", len(y))

    def compute(self) -> float:
        if int(self._num_examples) == 0:
            raise no_examples("CharacterErrorRate")
        if int(self._num_refs) == 0:
            return 0.0 if int(self._num_errors) == 0 else 1.0
        return int(self._num_errors) / int(self._num_refs)
