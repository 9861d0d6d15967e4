"""The typical loop runs at raw speed: no collective and no host read per iteration, except at
the iterations every rank agreed on (no wall-clock assertions: counts only)."""

import collections
import contextlib
import io

import pytest
import torch
import torch.distributed as dist
from torch import nn

import distengine.distributed as idist
from distengine.engine import Events, create_supervised_trainer
from distengine.handlers import Preemption, ProgressBar, TerminateOnNan
from distengine.metrics import RunningAverage

COLLECTIVES = ("all_reduce", "broadcast", "all_gather", "all_gather_object", "barrier")
HOST_READS = ("item", "tolist", "__bool__", "__float__", "__int__")


@contextlib.contextmanager
def counting(trainer, collectives, reads):
    """Count torch.distributed collectives and tensor-to-host reads, by trainer iteration."""
    originals = {}

    def wrap(owner, name, counter):
        original = getattr(owner, name)
        originals[(owner, name)] = original

        def counted(*args, **kwargs):
            counter[(trainer.state.iteration, trainer.last_event_name)] += 1
            return original(*args, **kwargs)

        setattr(owner, name, counted)

    for name in COLLECTIVES:
        wrap(dist, name, collectives)
    for name in HOST_READS:
        wrap(torch.Tensor, name, reads)
    try:
        yield
    finally:
        for (owner, name), original in originals.items():
            setattr(owner, name, original)


def typical_loop(every, length, epochs, device="cpu", sampler=False, redraw_s=0.0, watch=None):
    """A DDP trainer with a running loss, a progress bar on rank 0 (redrawn every iteration),
    a handler every 100 iterations, and the consensus checks TerminateOnNan and Preemption.
    ``watch(trainer)`` returns a context manager that the run happens in."""
    rank = dist.get_rank() if dist.is_initialized() else 0
    torch.manual_seed(0)
    model = idist.auto_model(nn.Linear(4, 2).to(device))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = create_supervised_trainer(model, optimizer, nn.CrossEntropyLoss(), device=device)
    RunningAverage(output_transform=lambda loss: loss, every=every).attach(trainer, "loss")
    ProgressBar(file=io.StringIO(), mininterval=redraw_s).attach(trainer, metric_names=["loss"])
    trainer.add_event_handler(Events.ITERATION_COMPLETED(every=100), lambda: None)
    TerminateOnNan(every=every).attach(trainer)
    preemption = Preemption(every=every)
    preemption.attach(trainer)
    g = torch.Generator().manual_seed(rank)
    data = [
        (torch.randn(8, 4, generator=g), torch.randint(0, 2, (8,), generator=g))
        for _ in range(length)
    ]
    if sampler:  # a DistributedSampler: equal shards, so no agreement on the length is needed
        x, y = torch.randn(8 * length * 2, 4), torch.randint(0, 2, (8 * length * 2,))
        dataset = torch.utils.data.TensorDataset(x, y)
        data = idist.auto_dataloader(dataset, batch_size=16, shuffle=True)
    collectives, reads = collections.Counter(), collections.Counter()
    try:
        with counting(trainer, collectives, reads), (watch or contextlib.nullcontext)(trainer):
            trainer.run(data, max_epochs=epochs)
    finally:
        preemption.restore()
    return collectives, reads


def expected_schedule(every, length, epochs):
    """Exchanges launched after the run's first iteration and after multiples of ``every``,
    each read at the next iteration (an epoch's last at its end), and one at an epoch's end
    unless its last iteration's exchange holds the running loss as of that iteration."""
    n = length * epochs
    launched = {k for k in range(1, n + 1) if k == 1 or k % every == 0}
    ends = {e for e in range(length, n + 1, length) if e not in launched}
    collectives = collections.Counter(launched) + collections.Counter(ends)
    read = {k + 1 if k % length else k for k in launched} | ends
    return collectives, launched, read


@pytest.mark.parametrize("every, length, epochs", [(10, 25, 2), (1, 6, 2), (7, 20, 1)])
def test_no_collective_per_iteration_outside_the_agreed_ones(ranks2, every, length, epochs):
    expected, launched, read = expected_schedule(every, length, epochs)
    for rank, (collectives, reads) in enumerate(
        ranks2.run(typical_loop, every, length, epochs, timeout=120)
    ):
        at = collections.Counter(event for (_, event), n in collectives.items() for _ in range(n))
        assert at[Events.STARTED] == 1  # the ranks agree on the run's last iteration
        per_iteration = collections.Counter(
            k
            for (k, event), n in collectives.items()
            if event is not Events.STARTED
            for _ in range(n)
        )
        assert per_iteration == expected  # ONE packed collective each time
        if rank == 1:  # no progress bar here: the library's own host reads only
            host = {k for (k, event), _ in reads.items() if event is Events.ITERATION_COMPLETED}
            agreed = launched | read  # values read when packed, results when read
            assert host <= agreed, f"host reads at {sorted(host - agreed)} outside the agreed"
            assert read <= host


def test_a_distributed_sampler_needs_no_agreement_on_the_length(ranks2):
    for collectives, _ in ranks2.run(typical_loop, 5, 6, 2, "cpu", True, timeout=120):
        events = {event for (_, event) in collectives}
        assert Events.STARTED not in events and events  # exchanges, but no agreement


def test_the_default_timed_schedule_is_agreed_and_sparse(ranks2):
    results = ranks2.run(typical_loop, None, 60, 2, timeout=120)
    launched = []
    for collectives, _ in results:
        per_iteration = {
            k: n for (k, event), n in collectives.items() if event is Events.ITERATION_COMPLETED
        }
        assert set(per_iteration.values()) == {1} and 1 in per_iteration
        launched.append(sorted(per_iteration))
    assert launched[0] == launched[1]  # rank 0 proposes, every rank follows
    assert len(launched[0]) < 60  # a fast loop: far fewer exchanges than iterations


@pytest.mark.gpu
def test_no_host_read_per_iteration_on_cuda():
    """One process on a GPU: the outputs, flags and averages stay on the device; a host read
    happens only when an exchange is read (it waits for that exchange's copy only)."""
    every, length = 10, 40
    _, _, read = expected_schedule(every, length, 1)
    # the bar reads the shown values from the device when it redraws: not here
    _, reads = typical_loop(every, length, 1, device="cuda", redraw_s=3600.0)
    host = {k for (k, event), _ in reads.items() if event is Events.ITERATION_COMPLETED}
    assert host <= read  # on the GPU nothing is read when packed
