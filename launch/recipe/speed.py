"""The recipe's speed options: the precision it trains in, and ``torch.compile``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

#: trainer.precision -> the autocast dtype (fp32: none; fp16 gets a GradScaler from TrainStep)
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def amp_options(trainer: Any) -> dict[str, Any]:
    """``amp_mode``/``amp_dtype`` for the supervised factories, from ``trainer.precision``
    (fp32, bf16 or fp16) or, when it is null, ``trainer.amp`` (the device's usual dtype).

    Example::

        amp_options(cfg.trainer)   # {"amp_mode": "amp", "amp_dtype": torch.bfloat16}
    """
    precision = trainer.get("precision")
    if precision is None:
        return {"amp_mode": "amp" if trainer.amp else None, "amp_dtype": None}
    if precision not in DTYPES:
        raise ValueError(f"trainer.precision={precision!r}: expected one of {', '.join(DTYPES)}")
    dtype = DTYPES[precision]
    return {"amp_mode": None if dtype is None else "amp", "amp_dtype": dtype}


def compile_model(model: nn.Module, **options: Any) -> nn.Module:
    """Compile the forward of ``model``'s own module in place and return ``model``.

    The module inside DistributedDataParallel gets a compiled ``forward`` (an
    instance attribute; ``options`` go to ``torch.compile``), so the trainer
    (through DDP) and the evaluator (which runs the inner module) both run
    compiled code, every ``isinstance`` and train/eval switch works as before,
    and the state dict keeps its keys (no ``_orig_mod.``): checkpoints load
    with or without compile. The first training iteration compiles, and so
    does the first evaluation (eval mode, no gradients); the hang watchdog
    pauses while torch compiles. (``nn.Module.compile()`` would do the same,
    but torch 2.13 skips the module's own ``_call_impl`` frame.) DDP then
    all-reduces the gradients after the compiled backward, not during it.

    Example::

        model = compile_model(idist.auto_model(net))
    """
    inner = model.module if isinstance(model, DistributedDataParallel) else model
    forward = inner.forward

    def compiled_forward(*args: Any, **kwargs: Any) -> Any:
        return forward(*args, **kwargs)

    inner.forward = torch.compile(compiled_forward, **options)
    return model
