"""Checks of a composed config's fixed groups, so bad input fails before any rank starts.

Every check raises :class:`ConfigError` with the key, the bad value and what
is accepted. None of them imports torch (they run before the busy-folder
check, which must answer fast), except :func:`visible_devices`, whose
answer :func:`check_devices` judges after that check.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil
from collections.abc import Callable, Mapping
from typing import Any

from launch.config.errors import ConfigError
from launch.config.messages import bad_value, typed, unknown_key
from launch.config.nodes import max_nodes, node_range
from launch.config.schema import GROUPS, SET_BY_LAUNCHER, TARGET_GROUPS, Config

START_METHODS = ("auto", "fork", "spawn", "forkserver")
BACKENDS = ("auto", "gloo", "nccl")
RESUME = ("auto", "never")
STRATEGIES = ("ddp", "fsdp")
PRECISIONS = ("fp32", "bf16", "fp16")
CONSOLES = ("rank0", "all")
SEED_RANGE = (0, 2**32 - 1)  # numpy's seeds; torch and random accept these too
#: The longest wait a key in seconds may ask for: a year (torch's timeouts overflow at inf).
MAX_SECONDS = 365 * 24 * 3600


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def positive_int(value: Any) -> bool:
    return _is_int(value) and value >= 1


def non_negative_int(value: Any) -> bool:
    return _is_int(value) and value >= 0


def seconds(low: float, high: float = MAX_SECONDS) -> Callable[[Any], bool]:
    """A finite number of seconds from ``low`` to ``high`` (``inf`` and ``nan`` are not)."""
    return lambda value: _is_number(value) and low <= value <= high


class one_of:  # noqa: N801 - reads as a rule, as the functions beside it
    """A test that ``value`` is one of ``choices`` (kept for the nearest-choice hint)."""

    def __init__(self, *choices: str | None) -> None:
        self.choices = choices

    def __call__(self, value: Any) -> bool:
        return value in self.choices


def nodes_value(value: Any) -> bool:
    """An int >= 1, or ``MIN:MAX`` with 1 <= MIN <= MAX."""
    try:
        low, high = node_range(value)
    except ValueError:
        return False
    return 1 <= low <= high


def is_bool(value: Any) -> bool:
    return isinstance(value, bool)


#: key -> (test, what is accepted); one line per value with a range.
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "dist.nproc_per_node": (lambda v: v == "auto" or positive_int(v), "a positive int or 'auto'"),
    "dist.nnodes": (nodes_value, "a positive int, or MIN:MAX (1 <= MIN <= MAX) for an elastic job"),
    "dist.node_rank": (non_negative_int, "an int from 0 to dist.nnodes - 1"),
    "dist.master_addr": (lambda v: isinstance(v, str) and v != "", "a host name or address"),
    "dist.master_port": (lambda v: v is None or (_is_int(v) and 1 <= v <= 65535), "1 to 65535"),
    "dist.backend": (one_of(*BACKENDS), f"one of {', '.join(BACKENDS)}"),
    "dist.max_restarts": (non_negative_int, "0 or more"),
    "dist.timeout_s": (seconds(1), f"seconds from 1 to {MAX_SECONDS} (a year)"),
    "dist.rdzv_timeout_s": (seconds(1), f"seconds from 1 to {MAX_SECONDS} (a year)"),
    "dist.shutdown_grace_s": (seconds(0), f"seconds from 0 to {MAX_SECONDS} (a year)"),
    "dist.start_method": (one_of(*START_METHODS), f"one of {', '.join(START_METHODS)}"),
    "dist.strategy": (one_of(*STRATEGIES), f"one of {', '.join(STRATEGIES)}"),
    "dist.console": (one_of(*CONSOLES), f"one of {', '.join(CONSOLES)}"),
    "checkpoint.resume": (one_of(*RESUME), f"one of {', '.join(RESUME)}"),
    "checkpoint.n_saved": (positive_int, "a positive int"),
    "checkpoint.every_iters": (non_negative_int, "0 (only at epoch ends) or a positive int"),
    "trainer.max_epochs": (positive_int, "a positive int"),
    "trainer.seed": (
        lambda v: _is_int(v) and SEED_RANGE[0] <= v <= SEED_RANGE[1],
        f"an int from {SEED_RANGE[0]} to {SEED_RANGE[1]}",
    ),
    "trainer.amp": (is_bool, "true or false"),
    "trainer.precision": (
        one_of(*PRECISIONS, None),
        f"one of {', '.join(PRECISIONS)} or null (trainer.amp decides)",
    ),
    "trainer.compile": (is_bool, "true or false"),
    "trainer.validate_every": (positive_int, "a positive int (epochs)"),
    "trainer.log_every": (positive_int, "a positive int (iterations)"),
    "trainer.progress_bar": (is_bool, "true or false"),
}


def top_keys() -> list[str]:
    """The config's keys a user may set (those the launcher sets left out)."""
    return [f.name for f in dataclasses.fields(Config) if f.name not in SET_BY_LAUNCHER]


def check_keys(cfg: Mapping[str, Any]) -> None:
    """Refuse keys the schema does not have (``+trainer.foo=1``, ``+anything=1``)."""
    top = [f.name for f in dataclasses.fields(Config)]
    for key in cfg:
        if key not in top:
            rest, value = _leaf(cfg[key])
            raise unknown_key(key, typed(value), top_keys(), "the config", rest=rest)
    for group, schema in GROUPS.items():
        names = [f.name for f in dataclasses.fields(schema)]
        for key in cfg[group] or {}:
            if key not in names:
                rest, value = _leaf(cfg[group][key])
                raise unknown_key(
                    f"{group}.{key}", typed(value), names, group, rest=rest, nested=False
                )
    for group in TARGET_GROUPS:
        node = cfg[group]
        if not isinstance(node, Mapping) or "_target_" not in node:
            raise ConfigError(f"{group}: expected a config with a _target_, got {node!r}")


def _leaf(value: Any) -> tuple[str, Any]:
    """``+traner.x=1`` composes ``traner: {x: 1}``: the rest of its key (``.x``) and ``1``."""
    rest = ""
    while isinstance(value, Mapping) and len(value) == 1:
        name, value = next(iter(value.items()))
        rest += f".{name}"
    return rest, value


def check_values(cfg: Mapping[str, Any]) -> None:
    """Raise ConfigError for the first value outside its range (see :data:`RULES`)."""
    for key, (test, accepted) in RULES.items():
        group, name = key.split(".")
        value = cfg[group][name]
        if not test(value):
            raise bad_value(key, value, accepted, getattr(test, "choices", ()))
    dist = cfg["dist"]
    if dist["node_rank"] >= max_nodes(dist["nnodes"]):
        raise ConfigError(
            f"dist.node_rank={dist['node_rank']!r}: expected 0 to "
            f"{max_nodes(dist['nnodes']) - 1} (dist.nnodes={dist['nnodes']})"
        )
    if max_nodes(dist["nnodes"]) > 1 and dist["master_port"] is None:
        raise ConfigError(
            "dist.master_port is required with dist.nnodes > 1: give every node the same port"
        )
    trainer = cfg["trainer"]
    if trainer["amp"] and trainer["precision"] == "fp32":
        raise ConfigError(
            "trainer.amp=true asks for autocast and trainer.precision=fp32 for none: give "
            "trainer.precision=bf16 or fp16, or leave trainer.amp=false"
        )
    if dist["strategy"] == "fsdp" and trainer["precision"] == "fp16":
        raise ConfigError(
            "trainer.precision=fp16 with dist.strategy=fsdp: sharded training computes in bf16 "
            "(no GradScaler for shards here): give trainer.precision=bf16"
        )
    if dist["strategy"] == "fsdp" and trainer["compile"]:
        raise ConfigError(
            "trainer.compile=true with dist.strategy=fsdp is not supported yet: "
            "leave trainer.compile=false, or use dist.strategy=ddp"
        )


def check_task(task: Mapping[str, Any]) -> None:
    """A script that exists, or an entrypoint written ``package.module:function``.

    That the entrypoint imports is checked by :func:`launch.config.targets.load_entrypoint`.
    """
    if task["script"] is not None and task["entrypoint"] is not None:
        raise ConfigError("give task.script or task.entrypoint, not both")
    if task["script"] is not None and not os.path.isfile(task["script"]):
        raise ConfigError(f"task.script={task['script']!r}: no such file")
    if task["args"] and task["script"] is None:
        raise ConfigError(
            "task.args (the arguments after --) are passed to task.script; give task.script too"
        )
    spec = task["entrypoint"]
    if spec is not None:
        module, _, function = str(spec).partition(":")
        if not module or not function:
            raise ConfigError(f"task.entrypoint={spec!r}: expected 'package.module:function'")


def check_elastic_batch(job: Mapping[str, Any], nproc: int) -> None:
    """The recipe's global batch must divide among every world size ``dist.nnodes=MIN:MAX``
    allows (MIN to MAX nodes of ``nproc`` ranks), or a membership change could not resume."""
    low, high = node_range(job["dist"]["nnodes"])
    batch = (job.get("data") or {}).get("batch_size")
    task = job["task"]
    if low == high or not _is_int(batch) or task["script"] or task["entrypoint"]:
        return
    worlds = [nodes * nproc for nodes in range(low, high + 1)]
    if all(batch % world == 0 for world in worlds):
        return
    step = math.lcm(*worlds)
    near = sorted({max(batch // step, 1) * step, (batch // step + 1) * step})
    raise ConfigError(
        f"data.batch_size={batch} (the global batch) does not divide among every world size "
        f"dist.nnodes={job['dist']['nnodes']} allows with {nproc} rank(s) per node "
        f"({', '.join(map(str, worlds))} ranks): use a multiple of {step} "
        f"(e.g. {' or '.join(map(str, near))})"
    )


@dataclasses.dataclass(frozen=True)
class Devices:
    """What the launcher sees of its node's CUDA devices."""

    gpus: int = 0
    bf16: bool = False  # the GPUs compute bf16 natively (compute capability 8.0 or more)
    triton: bool = False  # torch.compile can generate GPU kernels


def visible_devices() -> Devices:
    """This node's CUDA devices as torch sees them (none without CUDA); imports torch."""
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        return Devices()
    return Devices(
        gpus=torch.cuda.device_count(),
        bf16=torch.cuda.is_bf16_supported(including_emulation=False),
        triton=importlib.util.find_spec("triton") is not None,
    )


def ranks_use_gpus(dist: Mapping[str, Any], gpus: int) -> bool:
    """Whether the ranks compute on GPUs: there are some, and no several-rank gloo group."""
    nproc = gpus if dist["nproc_per_node"] == "auto" else dist["nproc_per_node"]
    return gpus > 0 and not (dist["backend"] == "gloo" and nproc * max_nodes(dist["nnodes"]) > 1)


def check_devices(job: Mapping[str, Any], devices: Devices) -> None:
    """Refuse a rank layout or a precision that cannot work on this node's ``devices``.

    nccl needs a GPU of its own per rank (two ranks on one GPU end in
    ``ncclInvalidUsage ... Duplicate GPU``): more ranks per node than GPUs
    with ``dist.backend=nccl``, or with ``auto`` (nccl wherever there are
    GPUs), is refused; ``dist.backend=gloo`` runs such ranks on the CPU.
    A rank forked from the launcher cannot use CUDA (the launcher counted the
    GPUs, which initialised CUDA in it): ``dist.start_method=fork`` is refused
    where CUDA is visible. Then :func:`check_speed_options` for the device the
    ranks compute on.
    """
    dist, gpus = job["dist"], devices.gpus
    backend, nproc = dist["backend"], dist["nproc_per_node"]
    if backend == "nccl" and gpus == 0:
        raise ConfigError(
            "dist.backend=nccl needs CUDA GPUs and this node shows none: use dist.backend=gloo "
            "(or auto)"
        )
    if gpus > 0 and backend in ("nccl", "auto") and nproc != "auto" and nproc > gpus:
        which = "nccl" if backend == "nccl" else "auto, which is nccl where there are GPUs"
        raise ConfigError(
            f"dist.nproc_per_node={nproc} with dist.backend={which}: nccl needs a GPU per rank "
            f"and this node shows {gpus}: use dist.nproc_per_node={gpus} (or auto), or "
            "dist.backend=gloo to run the ranks on the CPU"
        )
    if gpus > 0 and dist["start_method"] == "fork":
        raise ConfigError(
            f"dist.start_method=fork: this node shows {gpus} CUDA GPU{'s' if gpus > 1 else ''}, "
            "and a rank forked from the launcher cannot use CUDA: use dist.start_method=auto "
            "(forkserver where there are GPUs) or spawn"
        )
    check_speed_options(job["trainer"], devices if ranks_use_gpus(dist, gpus) else Devices())


def check_speed_options(trainer: Mapping[str, Any], devices: Devices) -> None:
    """bf16 where the ranks' GPUs compute it natively; a compiler for ``trainer.compile``.

    ``devices`` are the GPUs the ranks compute on (none: they compute on the CPU).
    """
    if trainer["precision"] == "bf16" and devices.gpus and not devices.bf16:
        raise ConfigError(
            "trainer.precision=bf16: this node's GPU has no native bf16 (compute capability "
            "below 8.0): use trainer.precision=fp16"
        )
    if not trainer["compile"]:
        return
    if devices.gpus and not devices.triton:
        raise ConfigError(
            "trainer.compile=true needs triton to compile for the GPU and it is not installed: "
            "pip install triton, or leave trainer.compile=false"
        )
    compiler = os.environ.get("CXX") or "g++"
    if not devices.gpus and not (shutil.which(compiler) or shutil.which("clang++")):
        raise ConfigError(
            f"trainer.compile=true needs a C++ compiler to compile for the CPU and neither "
            f"{compiler} nor clang++ is on the PATH: install one, or leave trainer.compile=false"
        )


#: The least memory a rank takes (Python, torch and a gloo group, before any model or data).
RANK_MEMORY = 100 * 2**20


def available_memory() -> int | None:
    """Bytes of memory this node can still give (``MemAvailable``), or None when unknown."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_rank_count(dist: Mapping[str, Any], memory: int | None) -> None:
    """Refuse more ranks on this node than its ``memory`` (bytes available) can hold.

    More ranks than cores only slow down (the launcher warns); more than
    memory holds cannot start at all (each would be killed or fail while
    importing torch).
    """
    nproc = dist["nproc_per_node"]
    if nproc == "auto" or memory is None or nproc * RANK_MEMORY <= memory:
        return
    fits = max(memory // RANK_MEMORY, 1)
    raise ConfigError(
        f"dist.nproc_per_node={nproc}: this node has {memory / 2**30:.1f} GiB of memory "
        f"available and a rank takes at least {RANK_MEMORY // 2**20} MiB (Python and torch), "
        f"so at most {fits} ranks can start: give dist.nproc_per_node={fits} or fewer"
    )


def check_run_dir(hydra: Mapping[str, Any], multirun: bool) -> None:
    """An empty ``hydra.run.dir=`` (or ``hydra.sweep.dir=``) would write into the current folder."""
    key = "sweep" if multirun else "run"
    if not str(hydra[key]["dir"] or "").strip():
        raise ConfigError(
            f"hydra.{key}.dir={hydra[key]['dir']!r}: expected a folder for the run (the "
            "default is outputs/<date>/<time>; '.' names the current folder explicitly)"
        )


def check_config(cfg: Mapping[str, Any]) -> None:
    """Every check of the fixed groups that needs neither torch nor a running rank."""
    check_keys(cfg)
    check_values(cfg)
    check_task(cfg["task"])
