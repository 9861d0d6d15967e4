"""Stop training when a score stops improving, on every rank at once."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

from distengine.distributed.consensus import decide
from distengine.engine import Engine, Events


def _renamed(old: str, new: str) -> None:
    warnings.warn(
        f"EarlyStopping's {old!r} is deprecated (as in PyTorch-Ignite 0.5.5): use {new!r}",
        DeprecationWarning,
        stacklevel=3,
    )


class EarlyStopping:
    """Terminate ``trainer`` after ``patience`` calls without improvement of the score.

    PyTorch-Ignite 0.5.5's arguments and rule: with ``mode="max"`` a score
    improves when it is above ``best + threshold`` (``threshold_mode="abs"``)
    or ``best * (1 + threshold)`` (``"rel"``); with ``mode="min"`` below
    ``best - threshold`` or ``best * (1 - threshold)``. Without improvement
    the counter grows and, unless ``cumulative``, ``best`` still follows the
    score. ``min_delta``, ``min_delta_mode`` and ``cumulative_delta`` (the
    old names) work with a DeprecationWarning.

    Attach it where the score is computed (usually the evaluator's
    ``COMPLETED``, or :meth:`attach`). Rank 0's score decides for every rank
    (one tiny broadcast): all ranks count the same patience, keep the same
    best score and stop at the same iteration, even if their scores differed.

    Example::

        stopper = EarlyStopping(patience=3, score_function=lambda e: e.state.metrics["accuracy"],
                                trainer=trainer, threshold=0.01)
        evaluator.add_event_handler(Events.COMPLETED, stopper)
    """

    def __init__(
        self,
        patience: int,
        score_function: Callable[[Engine], float],
        trainer: Engine,
        threshold: float = 0.0,
        cumulative: bool = False,
        threshold_mode: str = "abs",
        mode: str = "max",
        min_delta: float | None = None,
        min_delta_mode: str | None = None,
        cumulative_delta: bool | None = None,
    ) -> None:
        if min_delta is not None:
            _renamed("min_delta", "threshold")
            threshold = min_delta
        if min_delta_mode is not None:
            _renamed("min_delta_mode", "threshold_mode")
            threshold_mode = min_delta_mode
        if cumulative_delta is not None:
            _renamed("cumulative_delta", "cumulative")
            cumulative = cumulative_delta
        if not callable(score_function):
            raise TypeError(
                f"score_function must be a function of the engine, got {score_function!r}"
            )
        if not isinstance(patience, int) or isinstance(patience, bool) or patience < 1:
            raise ValueError(f"patience must be an int >= 1, got {patience!r}")
        if not isinstance(trainer, Engine):
            raise TypeError(f"trainer must be an Engine, got {type(trainer).__name__}")
        if threshold < 0:
            raise ValueError(f"threshold must be >= 0, got {threshold!r}")
        if threshold_mode not in ("abs", "rel"):
            raise ValueError(f"threshold_mode must be 'abs' or 'rel', got {threshold_mode!r}")
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.patience, self.score_function, self.trainer = patience, score_function, trainer
        self.threshold, self.threshold_mode = float(threshold), threshold_mode
        self.cumulative, self.mode = bool(cumulative), mode
        self.counter = 0
        self.best_score: float | None = None

    @property
    def min_delta(self) -> float:
        """Deprecated name of :attr:`threshold`."""
        _renamed("min_delta", "threshold")
        return self.threshold

    @min_delta.setter
    def min_delta(self, value: float) -> None:
        _renamed("min_delta", "threshold")
        self.threshold = value

    @property
    def min_delta_mode(self) -> str:
        """Deprecated name of :attr:`threshold_mode`."""
        _renamed("min_delta_mode", "threshold_mode")
        return self.threshold_mode

    @min_delta_mode.setter
    def min_delta_mode(self, value: str) -> None:
        _renamed("min_delta_mode", "threshold_mode")
        if value not in ("abs", "rel"):
            raise ValueError(f"min_delta_mode must be 'abs' or 'rel', got {value!r}")
        self.threshold_mode = value

    @property
    def cumulative_delta(self) -> bool:
        """Deprecated name of :attr:`cumulative`."""
        _renamed("cumulative_delta", "cumulative")
        return self.cumulative

    @cumulative_delta.setter
    def cumulative_delta(self, value: bool) -> None:
        _renamed("cumulative_delta", "cumulative")
        self.cumulative = value

    def __call__(self, engine: Engine) -> None:
        score = decide(float(self.score_function(engine)))
        if self.best_score is None:
            self.best_score = score
            return
        if self._improves(score):
            self.best_score, self.counter = score, 0
            return
        if not self.cumulative:
            keep = max if self.mode == "max" else min
            self.best_score = keep(score, self.best_score)
        self.counter += 1
        if self.counter >= self.patience:
            self.trainer.terminate()

    def _improves(self, score: float) -> bool:
        best = self.best_score
        step = self.threshold if self.mode == "max" else -self.threshold
        bound = best + step if self.threshold_mode == "abs" else best * (1 + step)  # type: ignore[operator]
        return score > bound if self.mode == "max" else score < bound

    def reset(self) -> None:
        """Forget the best score and the counter (a new training run)."""
        self.counter, self.best_score = 0, None

    def attach(
        self,
        engine: Engine,
        event: Any = Events.COMPLETED,
        reset_engine: Engine | None = None,
        reset_event: Any = Events.STARTED,
    ) -> None:
        """Check the score on ``engine``'s ``event``; :meth:`reset` on ``reset_engine``'s
        (default: ``engine``) ``reset_event``.

        Example::

            stopper.attach(evaluator, reset_engine=trainer)
        """
        engine.add_event_handler(event, self)
        (reset_engine or engine).add_event_handler(reset_event, self.reset)

    def state_dict(self) -> dict[str, Any]:
        """The counter, the best score and the threshold mode."""
        return {
            "counter": self.counter,
            "best_score": self.best_score,
            "threshold_mode": self.threshold_mode,
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (a dict without ``threshold_mode`` keeps the current one)."""
        self.counter = int(state_dict["counter"])
        self.best_score = state_dict["best_score"]
        self.threshold_mode = state_dict.get("threshold_mode", self.threshold_mode)
