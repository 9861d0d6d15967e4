"""The seed guide's flow and Ignite's getting-started flow, with only the imports changed:
on one process (the same numbers as Ignite where it is installed) and on 2 gloo ranks."""

import importlib.util

import pytest
import torch

from tests.ignite_compat.guide_flows import run_flow, script

HAS_IGNITE = importlib.util.find_spec("ignite") is not None
FILES = {
    "seed": ["checkpoints/checkpoint_16.pt", "checkpoints/checkpoint_8.pt"],
    "getting_started": None,  # the two best validations: depends on the scores
}


def test_only_the_imports_differ():
    for flow in ("seed", "getting_started", "distributed"):
        ours, theirs = script(flow, "distengine"), script(flow, "ignite")
        changed = [
            (a, b) for a, b in zip(ours.splitlines(), theirs.splitlines(), strict=True) if a != b
        ]
        assert changed and all("import" in a or a.strip().startswith("from") for a, _ in changed)


@pytest.mark.parametrize("flow", ["seed", "getting_started"])
def test_a_flow_on_one_process(flow, tmp_path):
    ours = run_flow(flow, "distengine", str(tmp_path / "distengine"))
    assert ours["iteration"] == 16 and ours["metrics"]["accuracy"] > 0.8  # it learned
    if FILES[flow] is not None:
        assert ours["files"] == FILES[flow]
    else:
        assert len(ours["files"]) == 2 and all(
            f.startswith("checkpoint/best_model_") for f in ours["files"]
        )
    assert len(ours["printed"]) == (4 if flow == "seed" else 5 + 8)
    if HAS_IGNITE:
        theirs = run_flow(flow, "ignite", str(tmp_path / "ignite"))
        assert ours["printed"] == theirs["printed"]
        assert all(torch.equal(a, b) for a, b in zip(ours["weights"], theirs["weights"]))
        assert ours["metrics"] == pytest.approx(theirs["metrics"], rel=1e-6)


def flows_on_ranks(workdir):
    flows = ("seed", "getting_started", "distributed")
    return {flow: run_flow(flow, "distengine", f"{workdir}/{flow}") for flow in flows}


def test_the_flows_on_two_ranks(ranks2, tmp_path):
    alone = {
        flow: run_flow(flow, "distengine", str(tmp_path / "alone" / flow))
        for flow in ("seed", "getting_started")
    }
    rank0, rank1 = ranks2.run(flows_on_ranks, str(tmp_path / "ranks"), timeout=120)
    for flow in ("seed", "getting_started"):  # unchanged scripts: every rank trains on all data
        for result in (rank0[flow], rank1[flow]):
            assert result["world_size"] == 2 and result["printed"] == alone[flow]["printed"]
            assert all(torch.equal(a, b) for a, b in zip(result["weights"], alone[flow]["weights"]))
        assert rank0[flow]["files"] == alone[flow]["files"]  # written once, by rank 0
    # with idist.auto_*: DDP over shards of the data, validation over exact shards
    dist0, dist1 = rank0["distributed"], rank1["distributed"]
    assert all(torch.equal(a, b) for a, b in zip(dist0["weights"], dist1["weights"]))
    for a, b in zip(dist0["weights"], alone["seed"]["weights"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)  # a global batch of 16 either way
    assert dist0["metrics"] == dist1["metrics"]
    assert dist0["metrics"]["accuracy"] == alone["seed"]["metrics"]["accuracy"]
    assert dist0["files"] == alone["seed"]["files"] and dist0["iteration"] == 16
