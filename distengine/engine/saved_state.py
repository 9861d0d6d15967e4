"""What an engine saves and loads back: the state dict, and the states of another world size.

An engine's state dict holds its counters, where the data stands, the random
generators (see :mod:`distengine.engine.resume`), the process function's state
and that of every object registered with ``register_stateful`` (the attached
metrics, running averages). It differs per rank, so a checkpoint keeps every
rank's; :meth:`SavedState.load_per_rank_state_dicts` resumes the states of a run
saved on another number of ranks. :class:`~distengine.engine.Engine` takes
these methods from :class:`SavedState`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from distengine.distributed.env import get_rank, get_world_size
from distengine.engine.resume import capture_rng
from distengine.engine.run_control import check_limit

STATE_DICT_KEYS = ("iteration", "epoch", "epoch_length", "max_epochs", "max_iters", "seed")
PROCESS_KEY = "process_function"


class SavedState:
    """The engine's state dict and stateful registry (a part of :class:`Engine`, not used alone).

    Example::

        trainer.register_stateful("ema", ema_tracker)
        torch.save(trainer.state_dict(), "trainer.pt")
    """

    # the engine's own, set by Engine.__init__ and its run loop
    state: Any
    state_dict_user_keys: list[str]
    _process_function: Any
    _statefuls: dict[str, Any]
    _flow: Any
    _restored: dict[str, Any] | None
    _pending_restore: tuple[Any, Any] | None
    _in_epoch: bool
    _epoch_start_iteration: int
    _terminated: bool
    _interrupted: bool

    def register_stateful(self, name: str, obj: Any) -> None:
        """Keep ``obj.state_dict()`` in this engine's state dict under ``name``.

        For state that belongs to the run, such as the metrics attached to the
        engine (registered as ``"metrics"``): ``load_state_dict`` gives it
        back to ``obj``. The process function's state, if it has one, is
        kept under ``"process_function"`` without registering.

        Example::

            trainer.register_stateful("ema", ema_tracker)
        """
        if name in STATE_DICT_KEYS or name == PROCESS_KEY or not isinstance(name, str):
            raise ValueError(f"{name!r} cannot name engine state: it is taken or not a str")
        if not (hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")):
            raise TypeError(f"{type(obj).__name__} has no state_dict/load_state_dict")
        self._statefuls[name] = obj

    def unregister_stateful(self, name: str) -> None:
        """Stop keeping ``name`` in this engine's state dict (no-op if it is not kept)."""
        self._statefuls.pop(name, None)

    def statefuls(self) -> dict[str, Any]:
        """The objects registered with :meth:`register_stateful`, by name."""
        return dict(self._statefuls)

    def _all_statefuls(self) -> dict[str, Any]:
        found = dict(self._statefuls)
        if hasattr(self._process_function, "state_dict"):
            found[PROCESS_KEY] = self._process_function
        return found

    # ------------------------------------------------------------ state dicts
    def state_dict(self) -> dict[str, Any]:
        """What an exact resume needs: counters, data position, generators, attached state.

        Save it (e.g. with :class:`~distengine.handlers.Checkpoint`) at any
        iteration; ``load_state_dict`` then ``run(data)`` continues with exactly
        the batches, in the same order and with the same random draws, that the
        uninterrupted run would see (see ``distengine.engine.resume`` for what
        is covered and what is refused). It also holds the process function's
        state (e.g. a TrainStep's GradScaler and pending gradients), that of
        every :meth:`register_stateful` object (the attached metrics) and the
        ``state`` attributes named in :attr:`state_dict_user_keys`. As in
        PyTorch-Ignite it holds one limit: ``max_iters`` if set, else
        ``max_epochs``. Only tensors and plain values: it loads with
        ``weights_only=True``.
        """
        state = {k: getattr(self.state, k) for k in STATE_DICT_KEYS}
        del state["max_epochs" if self.state.max_iters is not None else "max_iters"]  # Ignite's
        if self._restored is not None:  # loaded, not run yet: what was loaded
            position, rng = self._restored["data_position"], self._restored["rng"]
            rng = rng or capture_rng(self.state.dataloader)
        elif self._pending_restore is not None:  # about to go on (STARTED handlers)
            position, rng = self._pending_restore
        else:
            position = self._flow.position() if self._flow is not None else None
            rng = capture_rng(self.state.dataloader)
        state.update(
            in_epoch=self._in_epoch,
            epoch_start_iteration=self._epoch_start_iteration,
            data_position=position,
            rng=rng,
        )
        for key in self.state_dict_user_keys:
            state[key] = getattr(self.state, key)
        for name, obj in self._all_statefuls().items():
            state[name] = obj.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; the next ``run(data)`` resumes from it.

        Attached state (process function, metrics) is restored now; the data
        position and the generators when ``run`` goes on, after ``STARTED``.
        A mid-epoch resume does not fire ``EPOCH_STARTED`` again. A
        hand-written PyTorch-Ignite dict (``{"epoch": 3, "max_epochs": 10,
        "epoch_length": 100}``) is refused: it cannot say where the data and
        the generators stood.
        """
        check_state_dict(state_dict, self.state_dict_user_keys)
        if "rng" not in state_dict and (state_dict.get("epoch") or state_dict.get("iteration")):
            raise ValueError(
                f"this engine state dict ({sorted(state_dict)}) has no data position and "
                "generator states, so the run cannot resume exactly: load a dict saved by "
                "Engine.state_dict() (e.g. the engine saved in a Checkpoint)"
            )
        missing = [k for k in self._all_statefuls() if k not in state_dict]
        if missing:
            raise ValueError(
                f"Required state attribute {missing[0]!r} is absent in the engine state dict "
                f"(keys {sorted(state_dict)}): load a dict saved by this engine's state_dict()"
            )
        for name, obj in self._all_statefuls().items():
            obj.load_state_dict(state_dict[name])
        self._load_position(state_dict, state_dict.get("data_position"), state_dict.get("rng"))

    def _load_position(self, state: dict[str, Any], position: Any, rng: Any) -> None:
        for key in (*STATE_DICT_KEYS, *self.state_dict_user_keys):
            setattr(self.state, key, state.get(key))
        self.state.iteration = self.state.iteration or 0  # Ignite's form of a fresh engine
        self.state.epoch = self.state.epoch or 0
        self._in_epoch = bool(state.get("in_epoch", False))
        self._epoch_start_iteration = int(state.get("epoch_start_iteration", 0))
        self._restored = {"data_position": position, "rng": rng}
        self._flow, self._pending_restore = None, None
        self._terminated = self._interrupted = False

    def load_per_rank_state_dicts(self, states: list[dict[str, Any]]) -> None:
        """Resume from the states of a run saved on another number of ranks (contract C1).

        Counters and data position are global and must agree across the saved
        states: every rank takes them, and skips as many of its batches as
        each saved rank had used. With the same global batch (which the new
        number of ranks must divide) and an ``"even"`` loader, the run thus
        continues at the same global sample, on any number of ranks. Attached
        state goes to each object's own ``load_per_rank_state_dicts`` (metrics
        merge their ranks' accumulations; a training step outside an
        accumulation window takes rank 0's scaler); an object that is not per
        rank gets rank 0's state. Random generators cannot be redistributed:
        rank r continues saved rank r's streams when it has one, the others
        keep their own, and rank 0 warns that the run is not bitwise the one
        the saved number of ranks would have made (dropout, augmentation).

        Example::

            Checkpoint.load_objects({"trainer": trainer}, path)   # saved on 2 ranks, run on 3
        """
        self._check_same_position(states)
        absent = [k for k in self._all_statefuls() if k not in states[0]]
        if absent:
            raise ValueError(
                f"Required state attribute {absent[0]!r} is absent in the engine state dict "
                f"(keys {sorted(states[0])}): load states saved by this engine's state_dict()"
            )
        check_user_keys(states[0], self.state_dict_user_keys)
        for name, obj in self._all_statefuls().items():
            entries = [state[name] for state in states]
            if hasattr(obj, "load_per_rank_state_dicts"):
                obj.load_per_rank_state_dicts(entries)
            elif getattr(obj, "checkpoint_per_rank", False):
                raise ValueError(
                    f"engine state {name!r} ({type(obj).__name__}) differs per rank and has no "
                    f"load_per_rank_state_dicts: it cannot be resumed on {get_world_size()} "
                    f"rank(s) from {len(states)}; resume with {len(states)} rank(s)"
                )
            else:
                obj.load_state_dict(entries[0])
        rank = get_rank()
        mine = states[rank] if rank < len(states) else None
        position = states[0].get("data_position")
        if position is not None:
            pass_rng = (mine or states[0])["data_position"]["rng"]
            position = {**position, "rng": pass_rng}
        self._load_position(states[0], position, mine["rng"] if mine else None)
        if rank == 0:
            warnings.warn(
                f"resuming on {get_world_size()} rank(s) from states saved on {len(states)}: the "
                f"data continues at the same global position (iteration {states[0]['iteration']}"
                f", epoch {states[0]['epoch']}), but the ranks' random streams (dropout, "
                "augmentation) differ from the saved run's, so the result is not bitwise the "
                "one it would have reached",
                RuntimeWarning,
                stacklevel=2,
            )

    @staticmethod
    def _check_same_position(states: list[dict[str, Any]]) -> None:
        keys = ("iteration", "epoch", "in_epoch", "epoch_start_iteration", "max_epochs")
        for key in keys + ("max_iters", "epoch_length"):
            seen = {repr(state.get(key)) for state in states}
            if len(seen) > 1:
                raise ValueError(
                    f"the saved ranks disagree on {key} ({sorted(seen)}): the checkpoint's "
                    "engine states are not of one run and cannot be resumed on another world size"
                )
        missing = [k for k in ("iteration", "epoch", "rng") if k not in states[0]]
        if states[0].get("max_epochs") is None and states[0].get("max_iters") is None:
            missing.append("max_epochs or max_iters")
        if missing:
            raise ValueError(f"engine state dict lacks {missing}; it has {sorted(states[0])}")


def check_state_dict(state_dict: Any, user_keys: list[str]) -> None:
    """The checks PyTorch-Ignite makes of an engine state dict, with its messages' key phrases.

    A mapping with ``epoch_length``, ``iteration`` or ``epoch``, at most one
    limit (``max_epochs`` or ``max_iters``; none only for an engine that never
    ran), that limit not below the counters, and every key of
    ``state_dict_user_keys``. A dict in Ignite's own form (no generator states)
    must also give ``iteration`` or ``epoch``, not both, and a positive
    ``epoch_length`` to compute the other.

    Example::

        check_state_dict({"iteration": 5, "epoch": 1, "epoch_length": 5, "max_epochs": 2}, [])
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(
            "Argument state_dict should be a dictionary (one saved by Engine.state_dict()), "
            f"got {type(state_dict).__name__}"
        )
    keys = sorted(map(str, state_dict))
    ours = "rng" in state_dict  # saved by Engine.state_dict(): both counters
    for required in ("epoch_length", "iteration", "epoch"):
        either = not ours and ("iteration" in state_dict or "epoch" in state_dict)
        if required not in state_dict and not (required != "epoch_length" and either):
            raise ValueError(
                f"Required state attribute {required!r} is absent in the engine state dict "
                f"(keys {keys})"
            )
    if not ours:
        _check_ignite_counters(state_dict)
    limits = {k: state_dict.get(k) for k in ("max_epochs", "max_iters")}
    given = [k for k, v in limits.items() if v is not None]
    ran = bool(state_dict.get("iteration") or state_dict.get("epoch"))
    if len(given) > 1 or (ran and not given):
        raise ValueError(
            f"engine state dict should contain exactly one of '{tuple(limits)}' keys with a "
            f"value (the run's limit), got max_epochs={limits['max_epochs']!r}, "
            f"max_iters={limits['max_iters']!r}"
        )
    length = state_dict["epoch_length"]
    iteration = state_dict.get("iteration")
    epoch = state_dict.get("epoch")
    if epoch is None:
        epoch = iteration // length if length else 0
    if iteration is None:
        iteration = epoch * length if length else 0
    if limits["max_epochs"] is not None:
        check_limit("max_epochs", limits["max_epochs"], "epoch", epoch)
    if limits["max_iters"] is not None:
        check_limit("max_iters", limits["max_iters"], "iteration", iteration)
    check_user_keys(state_dict, user_keys)


def check_user_keys(state_dict: Mapping[str, Any], user_keys: list[str]) -> None:
    """Every ``state`` attribute named in ``engine.state_dict_user_keys`` is in ``state_dict``."""
    for key in user_keys:
        if key not in state_dict:
            raise ValueError(
                f"Required user state attribute {key!r} is absent in provided state_dict "
                f"(keys {sorted(map(str, state_dict))}): it is named in "
                "engine.state_dict_user_keys"
            )


def _check_ignite_counters(state_dict: Mapping[str, Any]) -> None:
    """Ignite's form gives ``iteration`` or ``epoch``; the other comes from ``epoch_length``."""
    if "iteration" in state_dict and "epoch" in state_dict:
        raise ValueError(
            "State dictionary should contain only one of 'iteration' or 'epoch' keys, got "
            f"iteration={state_dict['iteration']!r}, epoch={state_dict['epoch']!r}"
        )
    count = state_dict.get("iteration", state_dict.get("epoch"))
    length = state_dict["epoch_length"]
    if count and not (isinstance(length, int) and length > 0):
        raise ValueError(
            "epoch_length must be a positive integer to calculate missing 'iteration' or "
            f"'epoch' key, got epoch_length={length!r}"
        )
