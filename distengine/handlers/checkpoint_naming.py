"""PyTorch-Ignite's helpers for a Checkpoint's score and file names (``Checkpoint.<name>``)."""

from __future__ import annotations

from collections.abc import Callable

from distengine.engine import Engine

__all__ = ["get_default_score_fn", "setup_filename_pattern"]


def get_default_score_fn(metric_name: str, score_sign: float = 1.0) -> Callable[[Engine], float]:
    """A ``score_function`` reading ``engine.state.metrics[metric_name]`` times ``score_sign``.

    ``score_sign=-1.0`` keeps the lowest values (losses, errors).

    Example::

        best = Checkpoint({"model": model}, "best/", score_name="val_acc", n_saved=2,
                          score_function=Checkpoint.get_default_score_fn("accuracy"))
        evaluator.add_event_handler(Events.COMPLETED, best)
    """
    if score_sign not in (1.0, -1.0):
        raise ValueError(f"score_sign must be 1.0 or -1.0, got {score_sign!r}")

    def score(engine: Engine) -> float:
        metrics = engine.state.metrics
        if metric_name not in metrics:
            raise KeyError(
                f"score metric {metric_name!r} is not in the engine's metrics {sorted(metrics)}"
            )
        return score_sign * metrics[metric_name]

    return score


def setup_filename_pattern(
    with_prefix: bool = True,
    with_score: bool = True,
    with_score_name: bool = True,
    with_global_step: bool = True,
) -> str:
    """A ``filename_pattern`` for Checkpoint, built as PyTorch-Ignite builds its default.

    Example::

        Checkpoint.setup_filename_pattern(with_score=False, with_score_name=False)
        # "{filename_prefix}_{name}_{global_step}.{ext}"
    """
    if not (with_global_step or with_score):
        raise ValueError("with_score or with_global_step must be True (a name needs one)")
    pattern = "{name}"
    if with_global_step:
        pattern += "_{global_step}"
    if with_score_name and with_score:
        pattern += "_{score_name}={score}"
    elif with_score:
        pattern += "_{score}"
    elif with_score_name:
        raise ValueError("with_score_name=True needs with_score=True")
    if with_prefix:
        pattern = "{filename_prefix}_" + pattern
    return pattern + ".{ext}"
