"""Parameter schedulers as engine handlers, importable as from ``ignite.handlers.param_scheduler``.

Every scheduler's n-th call applies its n-th value; attach it to
``Events.ITERATION_STARTED`` (or ``EPOCH_STARTED``) as in PyTorch-Ignite.
The code lives in ``scheduler_base`` (the base classes), ``value_schedulers``
(formula schedules), ``scheduler_combinators`` (sequences and param groups)
``lr_scheduler`` (torch schedulers, warm-up, reduce on plateau) and
``batch_size_scheduler`` (a DataLoader's batch size).

Example::

    from distengine.handlers.param_scheduler import CosineAnnealingScheduler

    CosineAnnealingScheduler(optimizer, "lr", 0.1, 0.0, cycle_size=len(loader)).attach(trainer)
"""

from distengine.handlers.batch_size_scheduler import BatchSizeScheduler
from distengine.handlers.lr_scheduler import (
    LRScheduler,
    ReduceLROnPlateauScheduler,
    create_lr_scheduler_with_warmup,
)
from distengine.handlers.scheduler_base import BaseParamScheduler, ParamScheduler
from distengine.handlers.scheduler_combinators import ConcatScheduler, ParamGroupScheduler
from distengine.handlers.value_schedulers import (
    CosineAnnealingScheduler,
    CyclicalScheduler,
    LinearCyclicalScheduler,
    PiecewiseLinear,
)

__all__ = [
    "BaseParamScheduler",
    "BatchSizeScheduler",
    "ConcatScheduler",
    "CosineAnnealingScheduler",
    "CyclicalScheduler",
    "LRScheduler",
    "LinearCyclicalScheduler",
    "ParamGroupScheduler",
    "ParamScheduler",
    "PiecewiseLinear",
    "ReduceLROnPlateauScheduler",
    "create_lr_scheduler_with_warmup",
]
