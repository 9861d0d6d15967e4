"""Wall time of a trivial 2-rank job: ``python -m launch`` against ``torchrun``.

The job initialises gloo, all-reduces one tensor and exits. Median of
several runs of each, started the same way from this script. The launcher
starts its ranks three ways: forked from itself (``auto`` on CPU), forked
from a forkserver that imported torch while the launcher ran its checks
(``auto`` where there are GPUs: a forked rank cannot use CUDA), and spawned
(each rank imports torch anew, as under torchrun).

Run: ``python benchmarks/launch_latency.py``
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RUNS = 7
SCRIPT = """
import torch, torch.distributed as dist
dist.init_process_group("gloo")
t = torch.ones(1)
dist.all_reduce(t)
assert t.item() == dist.get_world_size()
dist.destroy_process_group()
"""


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, timeout=300)
    return time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp, "allreduce.py")
        script.write_text(SCRIPT)
        py = sys.executable
        cases = {
            "torchrun --standalone": [
                py,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc_per_node=2",
                str(script),
            ],
            "python -m launch task.script=": [
                py,
                "-m",
                "launch",
                f"hydra.run.dir={tmp}/a",
                f"task.script={script}",
                "dist.nproc_per_node=2",
            ],
        }
        for method in ("fork", "forkserver", "spawn"):
            cases[f"python -m launch task.entrypoint= (start_method={method})"] = [
                py,
                "-m",
                "launch",
                f"hydra.run.dir={tmp}/{method}",
                "dist.nproc_per_node=2",
                "dist.backend=gloo",
                f"dist.start_method={method}",
                "task.entrypoint=benchmarks.launch_latency:allreduce_entrypoint",
            ]
        times = {name: [] for name in cases}
        for _ in range(RUNS):  # interleaved, so load on the machine hits every case alike
            for name, cmd in cases.items():
                times[name].append(timed(cmd))
    print(f"# Launch latency ({machine()}; 2 gloo ranks, median of {RUNS})")
    print("| launcher | seconds |")
    print("|---|---|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.2f} |")


def allreduce_entrypoint(cfg) -> None:
    """The same trivial job as an entrypoint (the worker made the process group)."""
    import torch

    import distengine.distributed as idist

    assert idist.all_reduce(torch.ones(1)).item() == idist.get_world_size()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
