"""Single-file (DDP) vs sharded (FSDP + DCP) checkpoints on 2 gloo ranks: time and host memory.

- DDP, one file: the model is replicated; rank 0 writes one file (DiskSaver:
  temporary file, fsync, rename, CRC-32), every rank reads all of it back
  (``Checkpoint.load_objects``: CRC check, ``torch.load``, ``load_state_dict``).
- FSDP, DCP: the model is sharded with ``shard_model``; ``ShardedStorage``
  has every rank write its shards, rank 0 commit the folder. Sync: ``save``
  returns when committed. Async: ``save`` returns once the shards are staged
  in host memory ("blocking"), the writing runs in a thread and is committed by
  ``wait()`` ("total"). Load: manifest check, DCP read, ``set_state_dict``.
- Model + optimizer memory per rank after one AdamW step, DDP vs FSDP.

Peak memory is the highest RSS sampled every 2 ms during the operation,
minus the RSS before it, per rank. The ranks run with
``MALLOC_MMAP_THRESHOLD_=65536``: glibc's adaptive threshold otherwise keeps
freed buffers in the heap and RSS hides what sharding saves.

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


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRss:
    """The highest RSS seen while the block runs, above the RSS at its start (MB)."""

    def __enter__(self) -> PeakRss:
        self.start = self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, rss_mb())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())
        self.delta = self.peak - self.start


def timed(fn) -> tuple[float, float]:
    """(seconds, peak extra MB) of ``fn()`` on this rank, between two barriers."""
    import torch.distributed as dist

    dist.barrier()
    with PeakRss() as peak:
        start = time.perf_counter()
        fn()
        seconds = time.perf_counter() - start
    dist.barrier()
    return seconds, peak.delta


def build(strategy: str, width: int, depth: int):
    import torch
    from torch import nn

    from distengine.distributed.fsdp import shard_model

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

    torch.manual_seed(0)
    model = Model()
    if strategy == "fsdp":
        model = shard_model(model)
    else:
        model = nn.parallel.DistributedDataParallel(model)
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


def ddp_cases(folder: Path, model, opt):
    from distengine.handlers import Checkpoint, DiskSaver

    saver = DiskSaver(folder, require_empty=False)
    objects = {"model": model, "optimizer": opt}

    def save():
        saver({"model": model.module.state_dict(), "optimizer": opt.state_dict()}, "ckpt.pt")

    def load():
        Checkpoint.load_objects(objects, folder / "ckpt.pt")

    return {"save": save, "load": load}


def fsdp_cases(folder: Path, model, opt, async_save: bool):
    from distengine.checkpoint.sharded import ShardedStorage
    from distengine.checkpoint.sharded_state import gather_state, restore_state

    storage = ShardedStorage(folder, async_save=async_save)
    objects = {"model": model, "optimizer": opt}

    def save():
        storage.save("ckpt", *gather_state(objects))

    def load():
        sharded, _ = gather_state(objects)
        restore_state(objects, sharded, storage.load("ckpt", sharded))

    bare = iter(range(1_000_000))

    def bare_save():  # DCP alone, into a new folder too: no manifest (CRC), rename or removal
        import torch.distributed.checkpoint as dcp

        dcp.save(gather_state(objects)[0], checkpoint_id=folder.parent / f"bare-{next(bare)}")

    if not async_save:
        return {"save": save, "load": load, "bare dcp.save, for reference": bare_save}
    # "blocking": until save returns (the write goes on, finished untimed before the next run)
    return {
        "save (blocking)": (save, storage.wait),
        "save (total)": lambda: (save(), storage.wait()),
    }


def measure(folder: str, strategy: str, width: int, depth: int, repeats: int) -> list[dict]:
    """Every rank's figures: model+optimizer memory, then each case's median time and peak."""
    import torch.distributed as dist

    import distengine.checkpoint.sharded  # noqa: F401 - imports are not the model's memory
    import distengine.distributed.fsdp  # noqa: F401
    import distengine.handlers  # noqa: F401

    base = rss_mb()
    model, opt = build(strategy, width, depth)
    figures = {"model+optimizer MB": rss_mb() - base, "tensors MB": tensor_mb(model, opt)}
    root = Path(folder, strategy)
    if strategy == "ddp":
        groups = {"one file": ddp_cases(root, model, opt)}
    else:
        groups = {
            "DCP sync": fsdp_cases(root / "sync", model, opt, False),
            "DCP async": fsdp_cases(root / "async", model, opt, True),
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
    one = root / "ckpt.pt" if strategy == "ddp" else root / "sync" / "ckpt"
    on_disk = sum(f.stat().st_size for f in [one, *one.rglob("*")] if f.is_file())
    figures["on disk MB"] = on_disk / 2**20
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, figures)
    return gathered


def table(results: dict[str, list[dict]]) -> str:
    lines = [
        "| strategy | operation | seconds (rank 0 / 1) | peak extra host MB (rank 0 / 1) |",
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
    print(
        "| strategy | model + optimizer RSS MB per rank | their tensors MB per rank | on disk MB |"
    )
    print("|---|---|---|---|")
    for strategy, ranks in results.items():
        memory = " / ".join(f"{r['model+optimizer MB']:.0f}" for r in ranks)
        tensors = " / ".join(f"{r['tensors MB']:.0f}" for r in ranks)
        print(f"| {strategy} | {memory} | {tensors} | {ranks[0]['on disk MB']:.0f} |")


if __name__ == "__main__":
    main()
