"""Training throughput on one GPU: a hand-written loop against distengine, Ignite and Fabric.

An MLP of three 1024-wide hidden layers on batches of 512 (1024 features, 10
classes), SGD, fp32. The batches sit on the GPU already (a pool of 32, cycled),
so the figures are the loops' own cost on top of the same kernels. Cases, all
in the same run, interleaved and rotated so that clocks and load hit each alike:

- the hand-written loop (the reference, measured in this run);
- distengine's ``create_supervised_trainer``, bare;
- distengine's typical loop: a running average of the loss, a progress bar and a
  handler every 100 iterations;
- PyTorch-Ignite's trainer with the same handlers, when installed;
- Lightning Fabric's plain loop, when installed.

Each case warms up (CUDA context, cuBLAS, allocator) on its own model, then
runs ``--iterations`` iterations between two ``torch.cuda.synchronize()``.
Prints samples/s (median of ``--repeats``) and, unless ``--print-only``,
writes the section into ``benchmarks/REPORT.md`` with the device named. On a
machine without CUDA it says so and exits 0 (the report is left as it is).

Run: ``python benchmarks/gpu_throughput.py`` (``--cpu-smoke`` runs every code
path briefly on the CPU, to check the script; its figures mean nothing).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))  # measure this checkout's distengine
from common import try_import  # noqa: E402

REPORT = Path(__file__).parent / "REPORT.md"
TITLE = "## GPU throughput"
WIDTH, DEPTH, BATCH, CLASSES, POOL, WARMUP = 1024, 3, 512, 10, 32, 30


def mlp() -> nn.Module:
    layers: list[nn.Module] = []
    for _ in range(DEPTH):
        layers += [nn.Linear(WIDTH, WIDTH), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(WIDTH, CLASSES))


def batches(device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        (
            torch.randn(BATCH, WIDTH, generator=g).to(device),
            torch.randint(0, CLASSES, (BATCH,), generator=g).to(device),
        )
        for _ in range(POOL)
    ]


def cycled(data: list, n: int) -> list:
    return [data[i % len(data)] for i in range(n)]


def fresh(device: torch.device, data: list):
    """A model and optimizer, warmed up by the hand-written step (the same for every case)."""
    torch.manual_seed(0)
    model = mlp().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()
    for x, y in cycled(data, WARMUP):
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()
    return model, optimizer, loss_fn


def timed(device: torch.device, run: Callable[[], None]) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def raw(device: torch.device, data: list, n: int) -> float:
    model, optimizer, loss_fn = fresh(device, data)
    steps = cycled(data, n)

    def run():
        for x, y in steps:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()

    return timed(device, run)


def typical_handlers(engine, events, running_average, progress_bar) -> None:
    """A running average of the loss, a progress bar (to /dev/null) and an every-100 handler."""
    running_average(output_transform=lambda loss: loss).attach(engine, "loss")
    bar = progress_bar(file=open(os.devnull, "w"))  # noqa: SIM115 - lives with the run
    bar.attach(engine, metric_names=["loss"])
    engine.add_event_handler(events.ITERATION_COMPLETED(every=100), lambda engine: None)


def distengine_case(typical: bool) -> Callable[[torch.device, list, int], float]:
    def case(device: torch.device, data: list, n: int) -> float:
        from distengine.engine import Events, create_supervised_trainer
        from distengine.handlers import ProgressBar
        from distengine.metrics import RunningAverage

        model, optimizer, loss_fn = fresh(device, data)
        trainer = create_supervised_trainer(model, optimizer, loss_fn, device=device)
        if typical:
            typical_handlers(trainer, Events, RunningAverage, ProgressBar)
        steps = cycled(data, n)
        return timed(device, lambda: trainer.run(steps, max_epochs=1))

    return case


def ignite_typical(device: torch.device, data: list, n: int) -> float:
    from ignite.contrib.handlers import ProgressBar
    from ignite.engine import Events, create_supervised_trainer
    from ignite.metrics import RunningAverage

    model, optimizer, loss_fn = fresh(device, data)
    trainer = create_supervised_trainer(model, optimizer, loss_fn, device=device)
    typical_handlers(trainer, Events, RunningAverage, ProgressBar)
    steps = cycled(data, n)
    return timed(device, lambda: trainer.run(steps, max_epochs=1))


def fabric_plain(device: torch.device, data: list, n: int) -> float:
    from lightning.fabric import Fabric

    fabric = Fabric(accelerator=device.type, devices=1, precision="32-true")
    model, optimizer, loss_fn = fresh(device, data)
    model, optimizer = fabric.setup(model, optimizer)
    steps = cycled(data, n)

    def run():
        for x, y in steps:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            fabric.backward(loss)
            optimizer.step()

    return timed(device, run)


def cases() -> dict[str, Callable[[torch.device, list, int], float]]:
    found = {
        "hand-written loop": raw,
        "distengine, bare trainer": distengine_case(typical=False),
        "distengine, typical loop": distengine_case(typical=True),
    }
    if try_import("ignite") is not None:
        found["ignite, typical loop"] = ignite_typical
    if try_import("lightning") is not None:
        found["Lightning Fabric, plain loop"] = fabric_plain
    return found


def measure(device: torch.device, iterations: int, repeats: int) -> dict[str, list[float]]:
    """Seconds per run of each case, interleaved and rotated."""
    data = batches(device)
    found = cases()
    for case in found.values():  # first runs import and set up what later runs reuse
        case(device, data, WARMUP)
    names = list(found)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            seconds[name].append(found[name](device, data, iterations))
    return seconds


def section(device: torch.device, seconds: dict[str, list[float]], iterations: int) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (smoke run)"
    cuda = f", CUDA {torch.version.cuda}" if device.type == "cuda" else ""
    repeats = len(next(iter(seconds.values())))
    lines = [
        f"{TITLE} ({name}, torch {torch.__version__}{cuda}; MLP {WIDTH}x{DEPTH}, batch {BATCH}, "
        f"{iterations} iterations, median of {repeats})",
        "",
        "| loop | samples/s | vs hand-written | runs (samples/s) |",
        "|---|---|---|---|",
    ]
    reference = None
    for case, runs in seconds.items():
        rates = [iterations * BATCH / s for s in runs]
        rate = statistics.median(rates)
        reference = reference or rate
        shown = ", ".join(f"{r / 1000:.0f}k" for r in rates)
        lines.append(f"| {case} | {rate:,.0f} | {rate / reference:.2f} | {shown} |")
    return "\n".join(lines)


def write(text: str) -> None:
    """Replace this benchmark's section of REPORT.md (or add it at the end)."""
    report = REPORT.read_text() if REPORT.exists() else "# distengine benchmarks\n"
    pattern = re.compile(rf"^{re.escape(TITLE)}.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(report):
        report = pattern.sub(lambda _: text + "\n\n", report, count=1)
    else:
        report = report.rstrip("\n") + "\n\n" + text + "\n"
    REPORT.write_text(report)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--print-only", action="store_true", help="leave REPORT.md as it is")
    parser.add_argument("--cpu-smoke", action="store_true", help="check the script on the CPU")
    args = parser.parse_args()
    if args.cpu_smoke:
        device, args.iterations, args.repeats, args.print_only = torch.device("cpu"), 20, 1, True
    elif not torch.cuda.is_available():
        print(f"{TITLE}\n\nNo CUDA device on this machine: not measured (run it on a GPU).")
        return
    else:
        device = torch.device("cuda", 0)
    text = section(device, measure(device, args.iterations, args.repeats), args.iterations)
    print(text)
    if not args.print_only:
        write(text)
        print(f"\nwrote its section of {REPORT}")


if __name__ == "__main__":
    main()
