"""Stop training when a score stops improving, on every rank at once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from distengine.distributed.consensus import decide
from distengine.engine import Engine


class EarlyStopping:
    """Terminate ``trainer`` after ``patience`` calls without improvement of the score.

    Attach it where the score is computed (usually the evaluator's
    ``COMPLETED``). Rank 0's score decides for every rank (one tiny
    broadcast): all ranks count the same patience, keep the same best score
    (so its state is the same everywhere) and stop at the same iteration,
    even if their scores differed.

    Example::

        stopper = EarlyStopping(patience=3, score_function=lambda e: e.state.metrics["accuracy"],
                                trainer=trainer)
        evaluator.add_event_handler(Events.COMPLETED, stopper)
    """

    def __init__(
        self,
        patience: int,
        score_function: Callable[[Engine], float],
        trainer: Engine,
        min_delta: float = 0.0,
        cumulative_delta: bool = False,
        mode: str = "max",
    ) -> None:
        if not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be an int >= 1, got {patience!r}")
        if min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta!r}")
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        if not isinstance(trainer, Engine):
            raise TypeError(f"trainer must be an Engine, got {type(trainer).__name__}")
        self.patience, self.score_function, self.trainer = patience, score_function, trainer
        self.min_delta, self.cumulative_delta, self.mode = min_delta, cumulative_delta, mode
        self.counter = 0
        self.best_score: float | None = None

    def __call__(self, engine: Engine) -> None:
        score = decide(float(self.score_function(engine)))
        if self.mode == "min":
            score = -score
        if self.best_score is None:
            self.best_score = score
        elif score <= self.best_score + self.min_delta:
            if not self.cumulative_delta and score > self.best_score:
                self.best_score = score
            self.counter += 1
        else:
            self.best_score = score
            self.counter = 0
        if self.counter >= self.patience:
            self.trainer.terminate()

    def state_dict(self) -> dict[str, Any]:
        return {"counter": self.counter, "best_score": self.best_score}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.counter = int(state_dict["counter"])
        self.best_score = state_dict["best_score"]
