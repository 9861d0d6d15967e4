"""Handlers that attach to an engine: checkpoints, progress, TensorBoard, stopping, schedules.

Every rank computes; only rank 0 writes files, bars and event files.

Example::

    from distengine.handlers import Checkpoint, ProgressBar

    ProgressBar().attach(trainer)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, Checkpoint(to_save, "checkpoints"))
"""

from distengine.handlers.checkpoint import Checkpoint, CheckpointEvents, find_latest_checkpoint
from distengine.handlers.disk_saver import DiskSaver
from distengine.handlers.early_stopping import EarlyStopping
from distengine.handlers.ema_handler import EMAHandler
from distengine.handlers.logging import setup_logger
from distengine.handlers.model_checkpoint import ModelCheckpoint
from distengine.handlers.param_scheduler import (
    BaseParamScheduler,
    BatchSizeScheduler,
    ConcatScheduler,
    CosineAnnealingScheduler,
    CyclicalScheduler,
    LinearCyclicalScheduler,
    LRScheduler,
    ParamGroupScheduler,
    ParamScheduler,
    PiecewiseLinear,
    ReduceLROnPlateauScheduler,
    create_lr_scheduler_with_warmup,
)
from distengine.handlers.preemption import EXIT_PREEMPTED, Preemption
from distengine.handlers.progress_bar import ProgressBar
from distengine.handlers.save_handler import BaseSaveHandler
from distengine.handlers.state_param_scheduler import (
    ExpStateScheduler,
    LambdaStateScheduler,
    MultiStepStateScheduler,
    PiecewiseLinearStateScheduler,
    StateParamScheduler,
    StepStateScheduler,
)
from distengine.handlers.stores import EpochOutputStore
from distengine.handlers.telemetry import Telemetry
from distengine.handlers.tensorboard_logger import TensorboardLogger, global_step_from_engine
from distengine.handlers.terminate_on_nan import TerminateOnNan
from distengine.handlers.time_limit import TimeLimit
from distengine.handlers.time_profilers import BasicTimeProfiler, HandlersTimeProfiler
from distengine.handlers.timer import Timer
from distengine.handlers.watchdog import HangWatchdog

__all__ = [
    "EXIT_PREEMPTED",
    "BaseParamScheduler",
    "BaseSaveHandler",
    "BasicTimeProfiler",
    "BatchSizeScheduler",
    "HangWatchdog",
    "Preemption",
    "Checkpoint",
    "CheckpointEvents",
    "ConcatScheduler",
    "CosineAnnealingScheduler",
    "CyclicalScheduler",
    "DiskSaver",
    "EMAHandler",
    "EarlyStopping",
    "EpochOutputStore",
    "ExpStateScheduler",
    "HandlersTimeProfiler",
    "LambdaStateScheduler",
    "LRScheduler",
    "LinearCyclicalScheduler",
    "ModelCheckpoint",
    "MultiStepStateScheduler",
    "ParamGroupScheduler",
    "ParamScheduler",
    "PiecewiseLinear",
    "PiecewiseLinearStateScheduler",
    "ProgressBar",
    "ReduceLROnPlateauScheduler",
    "StateParamScheduler",
    "StepStateScheduler",
    "Telemetry",
    "TensorboardLogger",
    "TerminateOnNan",
    "TimeLimit",
    "Timer",
    "create_lr_scheduler_with_warmup",
    "find_latest_checkpoint",
    "global_step_from_engine",
    "setup_logger",
]
