"""Elastic jobs (``dist.nnodes=MIN:MAX``): a node lost and back, the data exact throughout."""

import os
import re
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

from tests.launcher.entry_points import fingerprint
from tests.launcher.launching import ROOT, kill_group, start_launch
from tests.launcher.weights import SHORT
from tests.multirank import free_port

ELASTIC = "task.entrypoint=tests.launcher.entry_points:elastic_recording"


def reference_batches(epochs: int = 4) -> dict[int, list[str]]:
    """The recipe's global batches, iteration by iteration, in one process (world size 1)."""
    from omegaconf import OmegaConf

    from distengine.engine import Engine
    from launch.recipe.train import _loaders

    groups = {"data": "data/digits.yaml", "trainer": "trainer/default.yaml"}
    cfg = OmegaConf.create(
        {group: OmegaConf.load(ROOT / "conf" / f) for group, f in groups.items()}
    )
    train, _ = _loaders(cfg)
    seen: dict[int, list[str]] = {}

    def step(engine, batch):
        seen[engine.state.iteration] = sorted(fingerprint(row) for row in batch[0])

    Engine(step).run(train, max_epochs=epochs)
    return seen


def recorded(run_dir: Path) -> dict[int, dict[int, list[str]]]:
    """{job restart: {iteration: the global batch}} from every rank's records."""
    found: dict[int, dict[int, list[str]]] = {}
    for path in (run_dir / "samples").glob("*.txt"):
        for line in path.read_text().splitlines():
            restart, _, iteration, *prints = line.split()
            batch = found.setdefault(int(restart), {}).setdefault(int(iteration), [])
            batch.extend(prints)
    return found


def ranks_at(run_dir: Path, iteration: int) -> int:
    """How many ranks recorded ``iteration`` so far."""
    return sum(
        any(line.split()[2] == str(iteration) for line in path.read_text().splitlines())
        for path in (run_dir / "samples").glob("*.txt")
    )


def worlds(run_dir: Path) -> set[tuple[int, int]]:
    """(job restart, world size) pairs recorded so far."""
    pairs = set()
    for path in (run_dir / "samples").glob("*.txt"):
        pairs |= {tuple(map(int, line.split()[:2])) for line in path.read_text().splitlines()}
    return pairs


class Output:
    """A launcher's stderr read as it comes (to wait for a line), and its stdout."""

    def __init__(self, proc) -> None:
        self.proc, self.err, self.out = proc, [], ""
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.err.append(line)

    def text(self) -> str:
        return "".join(self.err)

    def finish(self, timeout: float) -> int:
        self.out = self.proc.stdout.read()
        code = self.proc.wait(timeout=timeout)
        self._thread.join(timeout=10)
        return code


def until(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def newest_weights(run_dir: Path) -> dict:
    files = (run_dir / "checkpoints").glob("checkpoint_*.pt")
    newest = max(files, key=lambda p: int(p.stem.split("_")[1]))
    state = torch.load(newest, weights_only=True)
    assert state["trainer"]["__per_rank__"][0]["iteration"] == 88
    return state["model"]


def test_an_elastic_job_loses_a_node_goes_on_alone_and_grows_back_with_the_same_samples(
    tmp_path,
):
    """dist.nnodes=1:2, one rank per node: node 1's launcher (its process group) is killed at
    iteration 12; node 0 re-forms alone and resumes from checkpoint 10 on 1 rank; node 1 comes
    back at iteration 30 and the job grows to 2 nodes again; the run ends as an uninterrupted
    one would: the same global batches, the same weights within float tolerance (the CNN: the
    MLP's dropout draws differ on another number of ranks, as the resume warns)."""
    threads = {"OMP_NUM_THREADS": "1"}
    model = "model=cnn"
    reference_dir, run_dir = tmp_path / "reference", tmp_path / "elastic"
    reference = start_launch(  # uninterrupted, on 1 rank (meanwhile: the nodes wait a lot)
        f"hydra.run.dir={reference_dir}", model, "dist.nproc_per_node=1", *SHORT, env=threads
    )
    common = [
        f"hydra.run.dir={run_dir}",
        model,
        "dist.nnodes=1:2",
        "dist.nproc_per_node=1",
        f"dist.master_port={free_port()}",
        "dist.max_restarts=2",
        ELASTIC,
        *SHORT,
    ]
    node0 = Output(start_launch(*common, "dist.node_rank=0", env=threads))
    node1 = start_launch(*common, "dist.node_rank=1", env=threads)
    back = None
    try:
        until(lambda: ranks_at(run_dir, 12) == 2, 180, "both ranks at iteration 12")
        os.killpg(node1.pid, signal.SIGKILL)
        node1.wait(timeout=30)
        (run_dir / "killed").touch()
        until(lambda: any(w == 1 for _, w in worlds(run_dir)), 120, "node 0 alone")
        back = Output(start_launch(*common, "dist.node_rank=1", env=threads))
        assert node0.finish(timeout=240) == 0, node0.text()
        assert back.finish(timeout=60) == 0, back.text()
        assert reference.wait(timeout=240) == 0, reference.stderr.read()
    finally:
        for proc in (node0.proc, node1, back.proc if back else None, reference):
            if proc is not None:
                kill_group(proc)
    err0, err1 = node0.text(), back.text()
    print(f"\nnode 0:\n{err0}\nnode 1, back:\n{err1}")
    assert "node 0 joined: global rank 0 of 2 (rank 0 runs here)" in err0
    lost = (
        "membership changed: node 1 (global rank 1) vanished: 1 node, world size 1 (was 2); "
        "this node: global rank 0; the entrypoint starts again (newest: "
        f"{run_dir}/checkpoints/checkpoint_10.pt, iteration 10: 2 iterations redone)"
    )  # the recipe's own line: "the ranks resume from <file> (iteration 10): 2 ... redone"
    assert lost in err0
    assert "1 node waiting to join" in err0
    # after the growth torch's rendezvous orders the nodes as it will (by host and launcher
    # pid): node 1 may host global rank 0; both nodes must say the same
    back_rank = int(re.search(r"node 1 joined: global rank (\d) of 2", err1).group(1))
    rank0 = 1 - back_rank
    grown = (
        f"membership changed: node 1 (global rank {back_rank}) joined: 2 nodes, world size 2 "
        f"(was 1); this node: global rank {rank0}"
    )
    assert grown in err0
    assert ": 0 iterations redone)" in err0.split(grown)[1].splitlines()[0]
    assert f"node 1 (global rank {back_rank}) done" in err1
    assert f"node 0 (global rank {rank0}) done" in err0
    rounds = recorded(run_dir)
    expected_batches = reference_batches()
    assert sorted(rounds) == [0, 1, 2]
    assert {11, 12} <= set(rounds[0]) & set(rounds[1])  # trained before the loss, then redone
    latest = {it: batch for r in sorted(rounds) for it, batch in rounds[r].items()}
    assert sorted(latest) == list(range(1, 89))
    for iteration, batch in latest.items():
        assert sorted(batch) == expected_batches[iteration], iteration
    weights, expected = newest_weights(run_dir), newest_weights(reference_dir)
    for key, value in weights.items():
        torch.testing.assert_close(value, expected[key], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("nnodes", ["two", "3:2", "0:2"])
def test_a_bad_node_range_is_refused_by_name(nnodes):
    from launch.config.checks import RULES

    test, accepted = RULES["dist.nnodes"]
    assert not test(nnodes) and "MIN:MAX" in accepted


class FakeStore:
    """The few TCPStore calls :class:`launch.job.nodes.Nodes` makes, in a dict."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def set(self, key, value) -> None:
        self.data[key] = value.encode() if isinstance(value, str) else value

    def get(self, key) -> bytes:
        return self.data[key]

    def check(self, keys) -> bool:
        return all(key in self.data for key in keys)

    def add(self, key, amount) -> int:
        self.data[key] = str(int(self.data.get(key, b"0")) + amount).encode()
        return int(self.data[key])


def test_a_round_tells_each_node_its_global_ranks_wherever_rank_0_runs():
    from types import SimpleNamespace

    from launch.job.membership import joined_line
    from launch.job.nodes import Member, Nodes

    store = FakeStore()
    store.set("distengine/node/0", "[1, 2]")  # node 1 came first: group rank 0, 2 ranks
    nodes = Nodes(FakeStore(), node=0)
    nodes.nproc = 2
    nodes.round(SimpleNamespace(store=store, rank=1, world_size=2))
    assert nodes.members == [Member(1, 0, 1), Member(0, 2, 3)]
    assert joined_line(nodes) == (
        "node 0 joined: global ranks 2-3 of 4 (rank 0 runs on node 1, whose console shows "
        "its output)"
    )


def test_a_membership_line_says_who_left_the_new_world_and_what_is_redone():
    from launch.job.membership import membership_line
    from launch.job.nodes import Member, Nodes

    nodes = Nodes(FakeStore(), node=0)
    nodes.previous = [Member(0, 0, 1), Member(1, 2, 3)]
    nodes.members = [Member(0, 0, 1)]
    nodes.store.set("distengine/ended/1", "stopped")
    newest = (Path("/r/checkpoints/checkpoint_40.pt"), 40)
    assert membership_line(nodes, "recipe", newest, 47) == (
        "membership changed: node 1 (global ranks 2-3) stopped: 1 node, world size 2 (was 4); "
        "this node: global ranks 0-1; the ranks resume from /r/checkpoints/checkpoint_40.pt "
        "(iteration 40): 7 iterations redone"
    )
    nodes.previous, nodes.members = nodes.members, [Member(0, 0, 1), Member(1, 2, 3)]
    assert membership_line(nodes, "recipe", newest, 40).startswith(
        "membership changed: node 1 (global ranks 2-3) joined: 2 nodes, world size 4 (was 2)"
    )
