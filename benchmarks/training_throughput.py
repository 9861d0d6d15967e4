"""End-to-end training throughput of the default job's model on 2 gloo ranks.

Loops over the same data, seed and batch order: a hand-written DDP loop,
distengine's bare trainer, the typical loop (a running average of the loss,
a progress bar on rank 0 and a handler every 100 iterations) with distengine
and with PyTorch-Ignite when installed. distengine's typical loop runs twice:
with the running loss agreed across ranks where it is read (the default:
about twice a second, before the every-100 handler and at epoch ends) and
agreed after every iteration (``every=1``: one small asynchronous all-reduce
per iteration, read one iteration later), so the difference is what a
per-iteration exchange would cost. Every loop also records each
iteration's loss, to print the mean training loss of each epoch, which must
agree to float tolerance (the same computation). Prints samples/s (median of
several interleaved runs).

Run: ``python benchmarks/training_throughput.py``
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from common import machine, on_gloo_ranks, try_import  # noqa: E402

#: ``--epochs N``: runs of 5 epochs (110 iterations) weigh per-run costs (start, the last
#: exchange, bars opening and closing); longer ones show the per-iteration cost
EPOCHS = int(sys.argv[sys.argv.index("--epochs") + 1]) if "--epochs" in sys.argv else 5
REPEATS, BATCH = 16, 64


def setup(seed: int = 0):
    import distengine.distributed as idist
    from launch.recipe.data import digits
    from launch.recipe.models import mlp

    idist.manual_seed(seed)
    model = idist.auto_model(mlp())
    optimizer = torch.optim.Adam(model.parameters(), lr=0.003)
    train_set, _ = digits()
    loader = idist.auto_dataloader(train_set, batch_size=BATCH, shuffle=True, drop_last=True)
    return model, optimizer, loader


def raw_loop():
    model, optimizer, loader = setup()
    loss_fn, epoch_losses = nn.CrossEntropyLoss(), []
    start = time.perf_counter()
    for epoch in range(EPOCHS):
        loader.sampler.set_epoch(epoch)
        losses = []
        model.train()
        for x, y in loader:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
        epoch_losses.append(torch.stack(losses).mean().item())
    return time.perf_counter() - start, epoch_losses, len(loader) * EPOCHS


def with_handlers(engine, events, running_average, progress_bar, epoch_losses, **average):
    import os

    import torch.distributed as dist

    losses = []
    running_average(output_transform=lambda out: out, **average).attach(engine, "loss")
    if dist.get_rank() == 0:  # as the Ignite docs do; distengine's bar is rank-aware anyway
        bar = progress_bar(file=open(os.devnull, "w"))  # noqa: SIM115 - lives with the run
        bar.attach(engine, metric_names=["loss"])
    engine.add_event_handler(events.ITERATION_COMPLETED(every=100), lambda e: None)
    engine.add_event_handler(events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output))

    @engine.on(events.EPOCH_COMPLETED)
    def _epoch(e):
        epoch_losses.append(torch.tensor([float(v) for v in losses]).mean().item())
        losses.clear()


def _loop_with_handlers(engine_module: str, handlers_module: str, metrics_module: str, **average):
    """create_supervised_trainer + the typical handlers, from distengine or Ignite."""
    import importlib

    engine = importlib.import_module(engine_module)
    progress_bar = importlib.import_module(handlers_module).ProgressBar
    running_average = importlib.import_module(metrics_module).RunningAverage
    model, optimizer, loader = setup()
    trainer = engine.create_supervised_trainer(model, optimizer, nn.CrossEntropyLoss())
    if engine_module.startswith("ignite"):
        # Ignite's Engine does not call the sampler's set_epoch; without this line every
        # epoch would see the first epoch's order
        trainer.add_event_handler(
            engine.Events.EPOCH_STARTED, lambda e: loader.sampler.set_epoch(e.state.epoch - 1)
        )
    epoch_losses = []
    with_handlers(trainer, engine.Events, running_average, progress_bar, epoch_losses, **average)
    start = time.perf_counter()
    trainer.run(loader, max_epochs=EPOCHS)
    return time.perf_counter() - start, epoch_losses, len(loader) * EPOCHS


def distengine_loop():
    return _loop_with_handlers("distengine.engine", "distengine.handlers", "distengine.metrics")


def distengine_every_iteration_loop():
    """The typical loop with the running loss agreed after every iteration (every=1)."""
    modules = ("distengine.engine", "distengine.handlers", "distengine.metrics")
    return _loop_with_handlers(*modules, every=1)


def ignite_loop():
    return _loop_with_handlers("ignite.engine", "ignite.handlers", "ignite.metrics")


def distengine_bare_loop():
    """The trainer alone (recording the losses): the engine's own cost."""
    from distengine.engine import Events, create_supervised_trainer

    model, optimizer, loader = setup()
    trainer = create_supervised_trainer(model, optimizer, nn.CrossEntropyLoss())
    epoch_losses, losses = [], []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output))

    @trainer.on(Events.EPOCH_COMPLETED)
    def _epoch(e):
        epoch_losses.append(torch.stack(losses).mean().item())
        losses.clear()

    start = time.perf_counter()
    trainer.run(loader, max_epochs=EPOCHS)
    return time.perf_counter() - start, epoch_losses, len(loader) * EPOCHS


def _run_loops(cases: list[str]) -> dict:
    loops = {
        "raw": raw_loop,
        "distengine (bare trainer)": distengine_bare_loop,
        "distengine (typical loop)": distengine_loop,
        "distengine (typical loop, loss agreed every iteration)": distengine_every_iteration_loop,
        "ignite (typical loop)": ignite_loop,
    }
    found = {name: [] for name in cases}
    for repeat in range(REPEATS):
        # interleaved and rotated, so machine noise and warm-up hit every case alike
        for name in cases[repeat % len(cases) :] + cases[: repeat % len(cases)]:
            found[name].append(loops[name]())
    return found


def main() -> None:
    cases = ["raw", "distengine (bare trainer)", "distengine (typical loop)"]
    cases += ["distengine (typical loop, loss agreed every iteration)"]
    cases += ["ignite (typical loop)"] if try_import("ignite") else []
    found = on_gloo_ranks(_run_loops, cases)
    print(
        f"# Training throughput ({machine()}; default job's MLP on digits, 2 gloo ranks, "
        f"global batch {BATCH}, {EPOCHS} epochs, median of {REPEATS})"
    )
    print("| loop | samples/s (global) | vs raw | vs raw, paired | loss per epoch (rank 0) |")
    print("|---|---|---|---|---|")
    raw_rate = None
    for name, runs in found.items():
        rate = statistics.median(n * BATCH / t for t, _, n in runs)
        raw_rate = raw_rate or rate
        paired = statistics.median(raw[0] / t for (t, _, _), raw in zip(runs, found["raw"]))
        losses = ", ".join(f"{v:.6f}" for v in runs[0][1])
        print(f"| {name} | {rate:,.0f} | {rate / raw_rate:.2f} | {paired:.2f} | {losses} |")
    print(
        "\n(vs raw, paired: the median over rounds of raw time / this loop's time in the same "
        "round, so load that changes between rounds cancels out)"
    )
    reference = found["raw"][0][1]
    diffs = {
        name: max(abs(a - b) for a, b in zip(runs[0][1], reference)) for name, runs in found.items()
    }
    print(
        "\nLargest per-epoch loss difference from the raw loop: "
        + ", ".join(f"{name} {diff:.1e}" for name, diff in diffs.items())
    )


if __name__ == "__main__":
    main()
