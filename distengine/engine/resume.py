"""Exact resume: where the data stands, the random generators, and putting both back.

An engine saved at iteration ``i`` resumes with the batches, and the random
draws, that the uninterrupted run would have seen after ``i``. Two snapshots
make that possible: the generators as they were when the current pass over
the data began (to rebuild the same order), and as they were at the save
(to continue dropout, augmentation, ... identically).

Covered: torch's CPU generator, the current CUDA device's generator, Python's
``random``, NumPy's global generator, and the ``torch.Generator`` objects a
``DataLoader`` and its samplers hold. How the data is put back in place:

- a map-style ``DataLoader``: the batch sampler skips the batches already used
  (they are never loaded). With ``num_workers > 0`` the engine runs the loader
  with each batch's worker seeded from (the pass's seed, the batch's index),
  so a batch is the same whichever worker makes it, resumed or not;
- anything else that can be iterated again (a list, an ``IterableDataset``
  loader, a custom iterable): a new pass is made and the used batches are
  drawn and dropped, so its workers repeat their own random draws too.

On another number of ranks (a checkpoint saved on 2, resumed on 3), a pass
goes on at the same global sample when each global batch is the same set of
samples there: the same global batch (per-rank batch times ranks), and, for
an ``IterableDataset``, no DataLoader workers (each worker yields its own
part of the stream, and the workers per rank follow the number of ranks).
Each pass records its layout (:func:`data_layout`) for that check.

What cannot be put back exactly is refused by a ValueError that names it: a
one-shot iterator, a loader with ``in_order=False`` and workers saved
mid-epoch, generator states that do not match the data's generators, a CUDA
generator state where CUDA is not available, data shorter than the position,
a pass resumed with another per-rank batch size, or on another number of
ranks, that would draw other samples (:func:`layout_problem`).
"""

from __future__ import annotations

import collections
import itertools
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from distengine.distributed.env import get_world_size

_MASK64 = (1 << 64) - 1
_TWIN = "_distengine_seeded_twin"


# ------------------------------------------------------------------ generators
def data_generators(data: Any) -> list[torch.Generator]:
    """The explicit ``torch.Generator`` objects a DataLoader and its samplers draw from."""
    owners = [data, getattr(data, "sampler", None), getattr(data, "batch_sampler", None)]
    owners.append(getattr(owners[2], "sampler", None))
    found: list[torch.Generator] = []
    for owner in owners:
        gen = getattr(owner, "generator", None)
        if isinstance(gen, torch.Generator) and all(gen is not g for g in found):
            found.append(gen)
    return found


def _numpy_state() -> dict[str, Any] | None:
    try:
        import numpy
    except ImportError:
        return None
    kind, keys, pos, has_gauss, gauss = numpy.random.get_state()
    keys = torch.from_numpy(keys.astype("int64"))
    return {"kind": kind, "keys": keys, "pos": pos, "has_gauss": has_gauss, "gauss": gauss}


def _set_numpy_state(state: dict[str, Any] | None) -> None:
    if state is None:
        return
    import numpy

    keys = state["keys"].numpy().astype("uint32")
    numpy.random.set_state((state["kind"], keys, state["pos"], state["has_gauss"], state["gauss"]))


def capture_rng(data: Any = None) -> dict[str, Any]:
    """The state of every generator a run draws from (tensors and plain values only).

    CUDA's is that of the current device, and only once CUDA is in use.
    """
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": _numpy_state(),
        "generators": [g.get_state() for g in data_generators(data)],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(state: dict[str, Any], data: Any = None) -> None:
    """Put back every generator :func:`capture_rng` saw; refuse what cannot be put back."""
    missing = [key for key in ("torch", "python", "numpy", "generators") if key not in state]
    if missing:
        raise ValueError(
            f"the saved generator states lack {missing}: the checkpoint was written by an "
            "older distengine and cannot be resumed exactly"
        )
    generators = data_generators(data)
    if len(generators) != len(state["generators"]):
        raise ValueError(
            f"the data {type(data).__name__} holds {len(generators)} torch.Generator(s) but "
            f"the checkpoint saved {len(state['generators'])}: resume with data built the "
            "same way (generator= of the DataLoader and of its sampler)"
        )
    if "cuda" in state and not torch.cuda.is_available():
        raise ValueError(
            "the checkpoint holds the CUDA generator state of a GPU run, but CUDA is not "
            "available here: resume on a GPU"
        )
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    _set_numpy_state(state["numpy"])
    for gen, gen_state in zip(generators, state["generators"]):
        gen.set_state(gen_state)
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"])


def _seed_everything(seed: int) -> None:
    """Seed torch, random and NumPy's global generators (in a DataLoader worker)."""
    torch.manual_seed(seed)
    random.seed(seed)
    try:
        import numpy
    except ImportError:
        return
    numpy.random.seed(seed % 2**32)


def _splitmix(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def batch_seed(pass_seed: int, index: int) -> int:
    """The seed of batch ``index`` in a pass over the data whose seed is ``pass_seed``."""
    return _splitmix(_splitmix(pass_seed & _MASK64) ^ index) >> 1


# ------------------------------------------------------------------------ data
def data_length(data: Any) -> int | None:
    """``len(data)`` where the data has one, else None."""
    try:
        return len(data)
    except TypeError:
        return None


def is_one_shot(data: Any) -> bool:
    """Whether ``data`` is an iterator (a generator, ``iter(x)``) that one pass uses up."""
    return isinstance(data, Iterator)


def set_sampler_epoch(data: Any, epoch: int) -> None:
    """Call ``set_epoch`` on the data's sampler (e.g. a DistributedSampler), if it has one."""
    for owner in (getattr(data, "sampler", None), getattr(data, "batch_sampler", None)):
        for sampler in (owner, getattr(owner, "sampler", None)):
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
                return


def _rebuildable(data: Any) -> bool:
    """A plain map-style DataLoader with a batch sampler: batches can be skipped unloaded."""
    return (
        isinstance(data, DataLoader)
        and type(data).__iter__ is DataLoader.__iter__
        and not isinstance(data.dataset, IterableDataset)
        and data.batch_sampler is not None
    )


@dataclass
class _SeededBatch:
    """A batch's indices and the seed its worker draws with."""

    indices: Any
    seed: int


class _SeededDataset(Dataset):
    """The user's dataset; each batch is fetched after seeding the worker's generators."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: Any) -> Any:
        return self.dataset[index]

    def __getitems__(self, batch: Any) -> list[Any]:
        indices = batch
        if isinstance(batch, _SeededBatch):
            _seed_everything(batch.seed)
            indices = batch.indices
        getitems = getattr(self.dataset, "__getitems__", None)
        return getitems(indices) if getitems else [self.dataset[i] for i in indices]


class _EpochPlan:
    """Batch sampler of a rebuilt loader: the user's batches from ``skip`` on, maybe seeded."""

    def __init__(self, batch_sampler: Iterable[Any]) -> None:
        self.batch_sampler = batch_sampler
        self.skip = 0
        self.pass_seed: int | None = None
        self._rest: Iterator[tuple[int, Any]] | None = None

    def start(self, skip: int, pass_seed: int | None) -> None:
        self.skip, self.pass_seed, self._rest = skip, pass_seed, None

    def draw(self) -> None:
        """Start this pass's order now (under the generator states in force now), past ``skip``.

        The used batches are drawn and dropped, the rest is drawn as the run
        goes: a sampler that draws lazily from its generator (a RandomSampler
        given ``generator=`` draws again every 32 samples) then leaves it where
        the uninterrupted pass would, so the next pass's order is the same.
        """
        if self._rest is None:
            batches = enumerate(self.batch_sampler)
            collections.deque(itertools.islice(batches, self.skip), maxlen=0)
            self._rest = batches

    def __iter__(self) -> Iterator[Any]:
        self.draw()
        seed = self.pass_seed
        for index, batch in self._rest:  # type: ignore[union-attr]
            yield batch if seed is None else _SeededBatch(batch, batch_seed(seed, index))

    def __len__(self) -> int:
        return max(len(self.batch_sampler) - self.skip, 0)  # type: ignore[arg-type]


def _rebuilt(loader: DataLoader, plan: _EpochPlan, seeded: bool) -> DataLoader:
    """``loader`` over ``plan``; a seeded one draws its workers' base seed from a generator
    of its own (the batches' seeds make the workers' draws)."""
    extra: dict[str, Any] = {}
    if loader.num_workers > 0:
        extra = dict(
            prefetch_factor=loader.prefetch_factor,
            persistent_workers=loader.persistent_workers,
            in_order=loader.in_order,
        )
    if loader.pin_memory_device:
        extra["pin_memory_device"] = loader.pin_memory_device
    return DataLoader(
        _SeededDataset(loader.dataset) if seeded else loader.dataset,
        batch_sampler=plan,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context,
        generator=torch.Generator() if seeded else loader.generator,
        **extra,
    )


def _seeded_twin(loader: DataLoader) -> tuple[_EpochPlan, DataLoader]:
    """The seeded copy of ``loader`` (made once, kept on it: its persistent workers, if any,
    live as long as the user's loader, as the loader's own would)."""
    twin = loader.__dict__.get(_TWIN)
    if twin is None:
        plan = _EpochPlan(loader.batch_sampler)  # type: ignore[arg-type]
        twin = loader.__dict__[_TWIN] = (plan, _rebuilt(loader, plan, seeded=True))
    return twin


def _pass_seed(loader: DataLoader) -> int:
    """One draw, as a DataLoader makes for its workers' base seed, from the loader's generator."""
    return int(torch.empty((), dtype=torch.int64).random_(generator=loader.generator).item())


# ---------------------------------------------------------------------- layout
def data_layout(data: Any, world: int | None = None) -> dict[str, Any]:
    """How ``data`` is spread over the ranks: what a resume on other ranks must keep.

    ``world`` (ranks; this process's group by default), ``batch`` (per rank;
    None when ``data`` is no DataLoader), ``workers`` (per rank) and
    ``iterable`` (an ``IterableDataset``, whose items are split by rank and
    by worker). Plain values, saved with each pass's position.

    Example::

        data_layout(loader)   # {'world': 2, 'batch': 32, 'workers': 0, 'iterable': False}
    """
    loader = data if isinstance(data, DataLoader) else None
    batch = getattr(getattr(loader, "batch_sampler", None), "batch_size", None)
    return {
        "world": get_world_size() if world is None else world,
        # getattr: a DataLoader subclass may skip DataLoader.__init__ (a wrapper of another)
        "batch": batch if batch is not None else getattr(loader, "batch_size", None),
        "workers": getattr(loader, "num_workers", 0),
        "iterable": isinstance(getattr(loader, "dataset", None), IterableDataset),
    }


def layout_problem(saved: dict[str, Any] | None, now: dict[str, Any]) -> str | None:
    """Why a pass drawn with layout ``saved`` cannot go on with ``now`` (None: it can).

    On the same number of ranks the per-rank batch must be the one the pass
    was drawn with (a BatchSizeScheduler may have changed it since); the
    rest is the caller's. On another: the global batch (per-rank batch times
    ranks) must be the same, and an ``IterableDataset`` must be read without
    workers there and then. ``saved`` None (written before layouts were
    saved): no check.

    Example::

        layout_problem(data_layout(loader, world=3), data_layout(loader, world=2))
    """
    if saved is None:
        return None
    if saved["world"] == now["world"]:
        if None not in (saved["batch"], now["batch"]) and saved["batch"] != now["batch"]:
            return (
                f"the pass was drawn in batches of {saved['batch']} per rank and the data now "
                f"gives batches of {now['batch']}: the run would not continue the same "
                "samples; resume with the batch size of the save (a BatchSizeScheduler saved "
                "in the same checkpoint puts it back) and do not change it in the middle of a pass"
            )
        return None
    ranks = f"{saved['world']} ranks when saved, {now['world']} now"
    if saved["batch"] is not None and now["batch"] is not None:
        was, new = saved["batch"] * saved["world"], now["batch"] * now["world"]
        if was != new:
            return (
                f"{ranks}, with global batches of {was} samples then ({saved['batch']} per "
                f"rank) and of {new} now ({now['batch']} per rank): the run would not continue "
                f"the same samples; resume on {saved['world']} ranks, or with a global batch "
                f"of {was} on a number of ranks that divides it"
            )
    if (saved["iterable"] or now["iterable"]) and (saved["workers"] or now["workers"]):
        return (
            f"{ranks}, over an IterableDataset read by DataLoader workers ({saved['workers']} "
            f"per rank then, {now['workers']} now): each worker yields its own part of the "
            "stream, so items would be skipped and repeated; resume on "
            f"{saved['world']} ranks with the same workers, or read the stream with "
            "num_workers=0 (then any number of ranks that divides the global batch continues it)"
        )
    return None


def _check_repositionable(data: Any, mid_pass: bool) -> None:
    if is_one_shot(data):
        raise ValueError(
            f"cannot put the one-shot iterator {type(data).__name__} back at a saved position: "
            "resume over data that can be iterated again (a list, a DataLoader)"
        )
    workers = getattr(data, "num_workers", 0)
    if mid_pass and isinstance(data, DataLoader) and workers > 0 and not data.in_order:
        raise ValueError(
            "cannot resume mid-epoch over a DataLoader with in_order=False and "
            f"num_workers={data.num_workers}: its batch order is not reproducible; "
            "use in_order=True (the default)"
        )


class DataFlow:
    """Hands out an engine's batches and puts itself back at any saved position.

    Example::

        flow = DataFlow(loader)
        batch = flow.next_batch(epoch=1, iteration=0)
        start = flow.position()   # where the current pass began, for a state dict
    """

    def __init__(self, data: Iterable[Any]) -> None:
        self.data = data
        self.length = data_length(data)
        self._it: Iterator[Any] | None = None
        self._drawn = 0
        self._start: dict[str, Any] | None = None
        self._parked = False
        self._plan: _EpochPlan | None = None
        self._seeded_loader: DataLoader | None = None
        if _rebuildable(data) and data.num_workers > 0:  # type: ignore[attr-defined]
            self._plan, self._seeded_loader = _seeded_twin(data)  # type: ignore[arg-type]

    def next_batch(self, epoch: int, iteration: int) -> Any:
        """The next batch; raises StopIteration when the data ends (the flow then restarts)."""
        if self._it is None:
            if self._parked:
                self._reopen(capture_rng(self.data))
            else:
                self._open(epoch, iteration)
        try:
            batch = next(self._it)  # type: ignore[arg-type]
        except StopIteration:
            self.close()
            raise
        self._drawn += 1
        if self._drawn == self.length:
            self.close()
        return batch

    def close(self) -> None:
        """Drop the current pass; the next batch comes from a new pass over the data."""
        self._it, self._parked = None, False

    def park(self) -> None:
        """Let the pass's iterator (and its workers) go; the next batch reopens it in place.

        A one-shot iterator cannot be reopened, so it is kept.
        """
        if self._it is not None and not is_one_shot(self.data):
            self._it, self._parked = None, True

    def position(self) -> dict[str, Any] | None:
        """Where the current pass began, for a state dict (None: no pass open)."""
        return self._start if self._it is not None or self._parked else None

    def restore(
        self, position: dict[str, Any] | None, iteration: int, saved_rng: dict[str, Any]
    ) -> None:
        """Reopen the pass of ``position`` at ``iteration``; then the generators as ``saved_rng``.

        ``position`` None (saved between passes) restores the generators only.
        """
        self.close()
        _check_repositionable(self.data, mid_pass=position is not None)
        if position is None:
            restore_rng(saved_rng, self.data)
            return
        problem = layout_problem(position.get("layout"), data_layout(self.data))
        if problem:
            raise ValueError(f"cannot resume this pass over the data: {problem}")
        self._start, self._drawn = position, iteration - position["iteration"]
        self._reopen(saved_rng)

    def _reopen(self, final_rng: dict[str, Any]) -> None:
        """The pass that began at ``_start``, ``_drawn`` batches in; then ``final_rng``."""
        start = self._start
        self.length = data_length(self.data)
        restore_rng(start["rng"], self.data)  # type: ignore[index]
        set_sampler_epoch(self.data, start["epoch"] - 1)  # type: ignore[index]
        self._it, self._parked = self._iterate(self._drawn), False
        restore_rng(final_rng, self.data)

    def _open(self, epoch: int, iteration: int) -> None:
        set_sampler_epoch(self.data, epoch - 1)
        self.length = data_length(self.data)  # a BatchSizeScheduler may have changed it
        self._start = {
            "epoch": epoch,
            "iteration": iteration,
            "rng": capture_rng(self.data),
            "layout": data_layout(self.data),
        }
        self._it = self._iterate(0)
        self._drawn = 0

    def _iterate(self, skip: int) -> Iterator[Any]:
        """A pass over the data, ``skip`` batches in; its order drawn before it returns."""
        data = self.data
        if self._plan is not None:
            self._plan.start(skip, _pass_seed(data))  # type: ignore[arg-type]
            it = iter(self._seeded_loader)  # type: ignore[arg-type]
            self._plan.draw()
            return it
        if skip and _rebuildable(data):
            plan = _EpochPlan(data.batch_sampler)  # type: ignore[attr-defined]
            plan.start(skip, None)
            it = iter(_rebuilt(data, plan, seeded=False))  # type: ignore[arg-type]
            plan.draw()
            return it
        it = iter(data)
        for done in range(skip):
            try:
                next(it)
            except StopIteration:
                raise ValueError(
                    f"the data ended after {done} batches, before the saved position "
                    f"({skip} batches into its pass): resume over the same data"
                ) from None
        return it
