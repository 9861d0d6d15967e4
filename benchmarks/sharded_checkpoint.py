"""Single-file (DDP) vs sharded (FSDP + DCP) checkpoints on 2 gloo ranks: time and host memory.

Everything goes through the ``Checkpoint`` handler, as a user's run does:

- DDP, one file: the model is replicated; rank 0 writes one file (temporary
  file, fsync, rename, CRC-32); every rank loads it back
  (``Checkpoint.load_objects``: CRC check, ``torch.load``, ``load_state_dict``),
  memory-mapped (the default now) and, for comparison, read into memory
  (``mmap=False``, what every rank did before).
- FSDP, DCP: the model is sharded (``auto_model(strategy="fsdp")``); every
  rank writes its shards, rank 0 commits the folder. Sync: the save returns
  when committed. Async (``async_save=True``): the save returns once the
  shards are staged in host memory ("blocking"), the writing runs in a thread
  and is committed by ``wait()`` ("total"). Load: manifest check, DCP read,
  ``set_state_dict``. Also: the DDP file loaded into the sharded model (rank 0
  reads, each rank receives its shards).
- Model + optimizer memory per rank after one AdamW step, DDP vs FSDP.

Peak memory is the highest *private* resident memory (``RssAnon``: what a
rank really adds; memory-mapped file pages are shared through the page cache)
sampled every 2 ms during the operation, minus that before it, per rank. The
ranks run with ``MALLOC_MMAP_THRESHOLD_=65536``: glibc's adaptive threshold
otherwise keeps freed buffers in the heap and hides what sharding saves.

Run: ``python benchmarks/sharded_checkpoint.py [--width 384] [--depth 8] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from common import machine, on_gloo_ranks  # noqa: E402

VOCAB = 1000


def private_mb() -> float:
    """This process's private resident memory (RssAnon), in MB."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    return 0.0


class PeakMemory:
    """The highest private memory seen while the block runs, above that at its start (MB)."""

    def __enter__(self) -> PeakMemory:
        self.start = self.peak = private_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, private_mb())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, private_mb())
        self.delta = self.peak - self.start


def timed(fn) -> tuple[float, float]:
    """(seconds, peak extra MB) of ``fn()`` on this rank, between two barriers."""
    import torch.distributed as dist

    dist.barrier()
    with PeakMemory() as peak:
        start = time.perf_counter()
        fn()
        seconds = time.perf_counter() - start
    dist.barrier()
    return seconds, peak.delta


def build(strategy: str, width: int, depth: int):
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = nn.LayerNorm(width)
            self.attn = nn.MultiheadAttention(width, 4, batch_first=True)
            self.ff = nn.Sequential(
                nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)
            )

        def forward(self, x):
            h = self.norm(x)
            x = x + self.attn(h, h, h, need_weights=False)[0]
            return x + self.ff(x)

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(VOCAB, width)
            self.layers = nn.ModuleList(Block() for _ in range(depth))
            self.head = nn.Linear(width, VOCAB)

        def forward(self, x):
            h = self.embed(x)
            for layer in self.layers:
                h = layer(h)
            return self.head(h)

    import distengine.distributed as idist

    torch.manual_seed(0)
    model = idist.auto_model(Model(), strategy=strategy)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, VOCAB, (2, 8))
    nn.functional.cross_entropy(model(x).flatten(0, 1), x.flatten()).backward()
    opt.step()
    opt.zero_grad()
    return model, opt


def tensor_mb(model, opt) -> float:
    """Bytes of this rank's parameters, gradients and optimizer state (local shards), in MB."""
    import torch
    from torch.distributed.tensor import DTensor

    def local(t: torch.Tensor) -> torch.Tensor:
        return t.to_local() if isinstance(t, DTensor) else t

    tensors = [local(p) for p in model.parameters()]
    tensors += [local(p.grad) for p in model.parameters() if p.grad is not None]
    for state in opt.state.values():
        tensors += [local(v) for v in state.values() if isinstance(v, torch.Tensor)]
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


class Saves:
    """A Checkpoint of model and optimizer, called as an engine at increasing iterations."""

    def __init__(self, folder: Path, objects: dict, async_save: bool = False) -> None:
        from distengine.engine import Engine
        from distengine.handlers import Checkpoint

        self.objects = objects
        self.engine = Engine(lambda engine, batch: None)
        self.checkpoint = Checkpoint(objects, folder, n_saved=1, async_save=async_save)

    def save(self) -> None:
        self.engine.state.iteration += 1
        self.checkpoint(self.engine)

    def load(self, **kwargs) -> None:
        from distengine.handlers import Checkpoint

        Checkpoint.load_objects(self.objects, self.checkpoint.last_checkpoint, **kwargs)


def ddp_cases(folder: Path, model, opt) -> dict:
    from distengine.checkpoint import load_checkpoint_file
    from distengine.handlers import Checkpoint

    saves = Saves(folder, {"model": model, "optimizer": opt})

    def load_into_memory():  # without mmap: every rank holds a full private copy
        state = load_checkpoint_file(saves.checkpoint.last_checkpoint, mmap=False)
        Checkpoint.load_objects(saves.objects, state)

    return {
        "save": saves.save,
        "load (memory-mapped)": saves.load,
        "load (read into memory)": load_into_memory,
    }


def fsdp_cases(folder: Path, model, opt, async_save: bool, one_file: Path) -> dict:
    from distengine.handlers import Checkpoint

    saves = Saves(folder, {"model": model, "optimizer": opt}, async_save)
    if async_save:  # "blocking": until the save returns (committed, untimed, before the next run)
        return {
            "save (blocking)": (saves.save, saves.checkpoint.wait),
            "save (total)": lambda: (saves.save(), saves.checkpoint.wait()),
        }

    def load_one_file():  # the DDP file: rank 0 reads it, every rank receives its shards
        Checkpoint.load_objects(saves.objects, one_file)

    return {"save": saves.save, "load": saves.load, "load the DDP file": load_one_file}


def measure(folder: str, strategy: str, width: int, depth: int, repeats: int) -> list[dict]:
    """Every rank's figures: model+optimizer memory, then each case's median time and peak."""
    import torch.distributed as dist

    import distengine.distributed.fsdp  # noqa: F401 - imports are not the model's memory
    import distengine.handlers  # noqa: F401

    base = private_mb()
    model, opt = build(strategy, width, depth)
    figures = {"model+optimizer MB": private_mb() - base, "tensors MB": tensor_mb(model, opt)}
    root = Path(folder, strategy)
    if strategy == "ddp":
        groups = {"one file": ddp_cases(root, model, opt)}
    else:
        one_file = next(Path(folder, "ddp").glob("checkpoint_*.pt"))
        groups = {
            "DCP sync": fsdp_cases(root / "sync", model, opt, False, one_file),
            "DCP async": fsdp_cases(root / "async", model, opt, True, one_file),
        }
    for group, cases in groups.items():
        for case, fn in cases.items():
            fn, after = fn if isinstance(fn, tuple) else (fn, lambda: None)
            runs = []
            for _ in range(repeats):
                runs.append(timed(fn))
                after()
            figures[f"{group}: {case}"] = (
                statistics.median(s for s, _ in runs),
                max(m for _, m in runs),
            )
    kept = root.glob("checkpoint_*") if strategy == "ddp" else (root / "sync").glob("checkpoint_*")
    one = next(kept)
    on_disk = sum(f.stat().st_size for f in [one, *one.rglob("*")] if f.is_file())
    figures["on disk MB"] = on_disk / 2**20
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, figures)
    return gathered


def table(results: dict[str, list[dict]]) -> str:
    lines = [
        "| strategy | operation | seconds (rank 0 / 1) | peak extra private MB (rank 0 / 1) |",
        "|---|---|---|---|",
    ]
    for strategy, ranks in results.items():
        for key in ranks[0]:
            if isinstance(ranks[0][key], tuple):
                secs = " / ".join(f"{r[key][0]:.3f}" for r in ranks)
                peak = " / ".join(f"{r[key][1]:.0f}" for r in ranks)
                lines.append(f"| {strategy} | {key} | {secs} | {peak} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"  # inherited by the spawned ranks
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for strategy in ("ddp", "fsdp"):
            results[strategy] = on_gloo_ranks(
                measure, folder, strategy, args.width, args.depth, args.repeats
            )
    params = (VOCAB * args.width * 2 + args.depth * 12 * args.width**2) * 4 / 2**20
    print(
        f"## Sharded checkpoints ({machine()}; 2 gloo ranks; {args.depth} blocks of width "
        f"{args.width}, ~{params:.0f} MB of fp32 parameters, AdamW; median of {args.repeats})"
    )
    print(table(results))
    print()
    print("| strategy | model + optimizer private MB per rank | their tensors MB | on disk MB |")
    print("|---|---|---|---|")
    for strategy, ranks in results.items():
        memory = " / ".join(f"{r['model+optimizer MB']:.0f}" for r in ranks)
        tensors = " / ".join(f"{r['tensors MB']:.0f}" for r in ranks)
        print(f"| {strategy} | {memory} | {tensors} | {ranks[0]['on disk MB']:.0f} |")


if __name__ == "__main__":
    main()
