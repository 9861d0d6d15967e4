"""Collectives, environment and helpers on real gloo ranks, and with no process group."""

import pytest
import torch

import distengine.distributed as idist
from tests.multirank import RankFailure


def layout():
    return (
        idist.get_rank(),
        idist.get_world_size(),
        idist.get_local_rank(),
        idist.get_nproc_per_node(),
        idist.get_nnodes(),
        idist.get_node_rank(),
        idist.backend(),
        str(idist.device()),
    )


def test_layout(ranks):
    n = ranks.world_size
    assert ranks.run(layout) == [(r, n, r, n, 1, 0, "gloo", "cpu") for r in range(n)]


def reduce_all_ops():
    r = idist.get_rank()
    out = {}
    for op in ("sum", "mean", "min", "max", "product"):
        x = torch.tensor([r + 1.0, 10.0 * (r + 1)])
        result = idist.all_reduce(x, op)
        out[op] = result.tolist()
        out[f"{op}_in_place"] = result is x and x.tolist() == out[op]
    strided = torch.arange(6.0).reshape(2, 3).t()[0]  # not contiguous: reduced through a copy
    out["strided"] = idist.all_reduce(strided) is strided and strided.tolist()
    out["int_sum"] = idist.all_reduce(torch.tensor([r], dtype=torch.int64)).tolist()
    out["number"] = idist.all_reduce(r + 1)
    out["float"] = idist.all_reduce(0.5 * r, "max")
    out["mixed"] = idist.all_reduce(0 if r == 0 else 2.25)  # an int here, a float there
    out["number_types"] = type(idist.all_reduce(r + 1)).__name__
    return out


def test_all_reduce_ops_tensors_and_numbers(ranks):
    n = ranks.world_size
    vals = [float(r + 1) for r in range(n)]
    prod = 1.0
    for v in vals:
        prod *= v
    expected = {
        "sum": [sum(vals), 10 * sum(vals)],
        "mean": [sum(vals) / n, 10 * sum(vals) / n],
        "min": [1.0, 10.0],
        "max": [float(n), 10.0 * n],
        "product": [prod, prod * 10**n],
        "strided": [0.0, 3.0 * n],
        "int_sum": [sum(range(n))],
        "number": sum(range(1, n + 1)),
        "float": 0.5 * (n - 1),
        "mixed": 2.25 * (n - 1),  # was 4612811918334230528 on the int rank
        "number_types": "int",
    }
    expected.update({f"{op}_in_place": True for op in ("sum", "mean", "min", "max", "product")})
    results = ranks.run(reduce_all_ops)
    assert results == [expected] * n
    assert [type(r["mixed"]) for r in results] == [float] * n


def gather_uneven():
    r = idist.get_rank()
    rows = torch.full((r + 1, 2), float(r))  # rank r holds r+1 rows
    empty = torch.zeros((0, 3)) if r == 0 else torch.ones((2, 3))
    return (
        idist.all_gather(rows).tolist(),
        idist.all_gather(empty).shape,
        idist.all_gather(r * 10),
        idist.all_gather(f"rank{r}"),
        idist.all_gather({"r": r}),
        idist.all_gather(torch.tensor(r)).tolist(),
    )


def test_all_gather_uneven_tensors_numbers_strings_objects(ranks):
    n = ranks.world_size
    rows = [[float(r)] * 2 for r in range(n) for _ in range(r + 1)]
    expected = (
        rows,
        torch.Size([2 * (n - 1), 3]),
        [10 * r for r in range(n)],
        [f"rank{r}" for r in range(n)],
        [{"r": r} for r in range(n)],
        list(range(n)),
    )
    assert ranks.run(gather_uneven) == [expected] * n


def broadcast_things():
    r = idist.get_rank()
    mine = torch.full((3,), float(r))
    t = idist.broadcast(mine, src=1)
    obj = idist.broadcast({"cfg": [1, 2]} if r == 0 else None)
    idist.barrier()
    return t.tolist(), t is mine, obj


def test_broadcast_tensors_in_place_and_objects(ranks):
    expected = ([1.0] * 3, True, {"cfg": [1, 2]})
    assert ranks.run(broadcast_things) == [expected] * ranks.world_size


def int_mean():
    idist.all_reduce(torch.tensor([1]), "mean")


def test_mean_of_an_integer_tensor_is_refused_as_it_cannot_be_held_in_place(ranks2):
    with pytest.raises(RankFailure, match=r"op='mean' reduces in place and needs a floating"):
        ranks2.run(int_mean)


def bad_op():
    idist.all_reduce(torch.ones(1), "avg")


def test_bad_op_names_the_accepted_ops(ranks2):
    with pytest.raises(
        RankFailure, match=r"op must be one of \['max', 'mean', 'min', 'product', 'sum'\]"
    ):
        ranks2.run(bad_op)


def rank_zero_and_first():
    calls = []

    @idist.rank_zero_only
    def write():
        calls.append("written")
        return "done"

    result = write()
    order = []
    with idist.one_rank_first():
        order.append(idist.get_rank())
        stamp = torch.zeros(1)
    return result, calls, order, stamp.item()


def test_rank_zero_only_and_one_rank_first(ranks):
    results = ranks.run(rank_zero_and_first)
    assert results[0][:2] == ("done", ["written"])
    assert all(res[:2] == (None, []) for res in results[1:])


def seeds(offset):
    used = idist.manual_seed(7, rank_offset=offset)
    return used, torch.rand(1).item()


def test_manual_seed_shared_or_offset_by_rank(ranks2):
    shared = ranks2.run(seeds, False)
    assert shared[0] == shared[1] and shared[0][0] == 7
    offset = ranks2.run(seeds, True)
    assert [u for u, _ in offset] == [7, 8] and offset[0][1] != offset[1][1]


def hang_on_rank_1():
    if idist.get_rank() == 1:
        import time

        time.sleep(60)
    return "ok"


def test_harness_reports_a_hung_rank_and_recovers(pools):
    pool = pools.get(2)
    with pytest.raises(RankFailure, match="rank 1: no answer after 3s"):
        pool.run(hang_on_rank_1, timeout=3)
    assert not pool.alive
    assert pools.get(2).run(idist.get_rank) == [0, 1]  # a fresh pool replaced it


def raise_on_rank_0():
    if idist.get_rank() == 0:
        raise KeyError("only rank 0")
    idist.barrier()  # rank 1 would wait here for rank 0 forever


def test_harness_reports_the_failing_rank_without_waiting_for_the_timeout(pools):
    import time

    start = time.monotonic()
    with pytest.raises(RankFailure, match="(?s)rank 0 raised:.*KeyError: 'only rank 0'"):
        pools.get(2).run(raise_on_rank_0, timeout=60)
    assert time.monotonic() - start < 30


# ---------------------------------------------------------------- world size 1
def test_single_process_without_group(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(var, raising=False)
    idist.initialize()  # no-op: no other ranks
    assert not idist.is_distributed()
    assert (idist.get_rank(), idist.get_world_size(), idist.backend()) == (0, 1, None)
    x = torch.tensor([1.0, 2.0])
    assert idist.all_reduce(x, "mean") is x and x.tolist() == [1.0, 2.0]
    assert idist.all_reduce(3) == 3 and isinstance(idist.all_reduce(3), int)
    assert idist.all_reduce(2.5) == 2.5
    assert torch.equal(idist.all_gather(x), x) and idist.all_gather("a") == ["a"]
    assert idist.broadcast({"a": 1}) == {"a": 1}
    idist.barrier()
    model = torch.nn.Linear(2, 2)
    assert idist.auto_model(model) is model
    loader = idist.auto_dataloader(list(range(10)), batch_size=4)
    assert len(loader) == 3
    idist.finalize()


def test_environment_of_torchrun_and_slurm(monkeypatch):
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    monkeypatch.setenv("GROUP_RANK", "1")
    assert (
        idist.get_rank(),
        idist.get_world_size(),
        idist.get_local_rank(),
        idist.get_nproc_per_node(),
        idist.get_nnodes(),
        idist.get_node_rank(),
    ) == (5, 8, 1, 4, 2, 1)
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK"):
        monkeypatch.delenv(var)
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "2(x2)")
    monkeypatch.setenv("SLURM_NODEID", "1")
    assert (
        idist.get_rank(),
        idist.get_world_size(),
        idist.get_local_rank(),
        idist.get_nproc_per_node(),
        idist.get_nnodes(),
        idist.get_node_rank(),
    ) == (3, 4, 1, 2, 2, 1)


def test_slurm_node_list_first_host():
    from distengine.distributed.group import _first_slurm_host

    assert _first_slurm_host("node[03-05,9],gpu1") == "node03"
    assert _first_slurm_host("gpu7") == "gpu7"


def test_bad_backend_and_bad_environment(monkeypatch):
    from distengine.distributed.group import resolve_backend

    with pytest.raises(
        ValueError, match=r"backend must be one of \('auto', 'gloo', 'nccl'\), got 'mpi'"
    ):
        resolve_backend("mpi")
    monkeypatch.setenv("RANK", "one")
    with pytest.raises(ValueError, match="RANK='one' is not an integer"):
        idist.get_rank()


# ------------------------------------------------------------------ one device per rank
@pytest.mark.parametrize(
    "local_rank, gpus, backend, bound, expected",
    [
        (3, 4, "nccl", None, "cuda:3"),  # no set_device: still this rank's own GPU
        (5, 4, "nccl", None, "cuda:1"),
        (1, 2, None, None, "cuda:1"),  # no process group yet
        (1, 4, "gloo", None, "cpu"),  # gloo computes on the CPU even where GPUs exist
        (0, 4, "nccl", 2, "cuda:2"),  # the group's bound device wins
        (2, 0, None, None, "cpu"),  # no CUDA
    ],
)
def test_device_and_collective_device_have_one_source(
    monkeypatch, local_rank, gpus, backend, bound, expected
):
    from distengine.distributed import env

    monkeypatch.setenv("LOCAL_RANK", str(local_rank))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)  # nobody called set_device
    monkeypatch.setattr(env, "backend", lambda: backend)
    bound_device = None if bound is None else torch.device("cuda", bound)
    monkeypatch.setattr(env, "_bound_device", lambda: bound_device)
    assert str(idist.device()) == expected
    assert str(env.comm_device()) == (expected if backend == "nccl" else "cpu")
