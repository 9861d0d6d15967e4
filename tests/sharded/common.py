"""A small transformer, its data and training loop, shared by the sharded tests.

Every function works on any number of gloo ranks and in one process without a
process group: rank ``r`` of ``w`` trains on its slice of the same global batch.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

from distengine.distributed import get_rank, get_world_size
from distengine.distributed.fsdp import clip_grad_norm, no_gradient_sync, shard_model

GLOBAL_BATCH = 6  # divisible by 1, 2 and 3 ranks
VOCAB = 37
FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)

# FSDP2 warns on every step that the root returned a view (Linear on 3-d input); harmless here
warnings.filterwarnings("ignore", message="FSDP2-wrapped module")


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, 2, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.ff(x)


class TinyTransformer(nn.Module):
    def __init__(self, width: int = 16, depth: int = 3) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        self.layers = nn.ModuleList(Block(width) for _ in range(depth))
        self.head = nn.Linear(width, VOCAB)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        for layer in self.layers:
            h = layer(h)
        return self.head(h)


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's slice of global batch ``step`` (the same global batch for any world size)."""
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randint(0, VOCAB, (GLOBAL_BATCH, 5), generator=g)
    y = torch.randint(0, VOCAB, (GLOBAL_BATCH, 5), generator=g)
    per = GLOBAL_BATCH // get_world_size()
    rows = slice(get_rank() * per, (get_rank() + 1) * per)
    return x[rows], y[rows]


def build(shard: bool = True, optimizer: str = "adamw", **shard_kwargs: Any):
    """The same initial model on every rank (seed 0), sharded, and its optimizer."""
    torch.manual_seed(0)
    model = TinyTransformer()
    if shard:
        model = shard_model(model, **shard_kwargs)
    if optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return model, opt


def train(model, opt, steps: range, accum: int = 1, clip: float | None = None) -> list[float]:
    """``accum`` micro-batches per step (no gradient sync but on the last); the clip norms."""
    norms = []
    for step in steps:
        for micro in range(accum):
            x, y = batch(step * accum + micro)
            loss = nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten()) / accum
            if micro < accum - 1:
                with no_gradient_sync(model):
                    loss.backward()
            else:
                loss.backward()
        if clip is not None:
            norms.append(clip_grad_norm(model.parameters(), clip).item())
        opt.step()
        opt.zero_grad()
    return norms


def clone(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: clone(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(clone(v) for v in obj)
    return obj.detach().clone() if isinstance(obj, torch.Tensor) else obj


def full_state(model, opt) -> dict[str, Any]:
    """Full (unsharded) model and optimizer state, on rank 0 ({} elsewhere), copied."""
    model_sd, optim_sd = get_state_dict(model, opt, options=FULL)
    return clone({"model": model_sd, "optim": optim_sd}) if get_rank() == 0 else {}


def save_on_rank0(obj: Any, path: str | Path) -> None:
    """``torch.save`` on rank 0, then a barrier, so the test process can read it."""
    if get_rank() == 0:
        torch.save(obj, path)
    if dist.is_initialized():
        dist.barrier()


def flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts and lists as one dict of dotted keys."""
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return {prefix: obj}
    out: dict[str, Any] = {}
    for key, value in items:
        out.update(flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def differences(a: Any, b: Any, atol: float = 0.0) -> list[str]:
    """The keys where ``a`` and ``b`` differ (bitwise with atol=0), and keys in one only."""
    fa, fb = flat(a), flat(b)
    bad = sorted(set(fa) ^ set(fb))
    for key in set(fa) & set(fb):
        x, y = fa[key], fb[key]
        if isinstance(x, torch.Tensor):
            same = x.shape == y.shape and (
                torch.equal(x, y) if atol == 0 else torch.allclose(x, y, rtol=0, atol=atol)
            )
        else:
            same = x == y
        if not same:
            bad.append(key)
    return bad
