"""The event engine: :class:`Engine`, :class:`State`, :class:`Events` and step factories."""

from distengine.engine.deterministic import DeterministicEngine, keep_random_state
from distengine.engine.engine import Engine
from distengine.engine.events import (
    CallableEventWithFilter,
    EventEnum,
    Events,
    EventsList,
    FilteredEvent,
)
from distengine.engine.handlers import RemovableEventHandle, observer
from distengine.engine.state import State
from distengine.engine.steps import TrainStep
from distengine.engine.supervised import (
    create_supervised_evaluator,
    create_supervised_trainer,
    supervised_evaluation_step,
    supervised_training_step,
)
from distengine.engine.tbptt import Tbptt_Events, create_supervised_tbptt_trainer

__all__ = [
    "CallableEventWithFilter",
    "DeterministicEngine",
    "Engine",
    "EventEnum",
    "Events",
    "EventsList",
    "FilteredEvent",
    "RemovableEventHandle",
    "State",
    "Tbptt_Events",
    "TrainStep",
    "create_supervised_evaluator",
    "create_supervised_tbptt_trainer",
    "create_supervised_trainer",
    "keep_random_state",
    "observer",
    "supervised_evaluation_step",
    "supervised_training_step",
]
