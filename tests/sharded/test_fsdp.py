"""shard_model, is_sharded, no_gradient_sync and clip_grad_norm, on 2 and 3 gloo ranks."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor

from distengine.distributed import get_rank
from distengine.distributed.fsdp import (
    clip_grad_norm,
    default_blocks,
    is_sharded,
    no_gradient_sync,
    shard_model,
)
from tests.sharded.common import (
    Block,
    TinyTransformer,
    batch,
    build,
    differences,
    full_state,
    train,
)


class Nested(nn.Module):
    """A list of Sequential blocks (the biggest container) beside a small Sequential head."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(8, 8), nn.ReLU()) for _ in range(3))
        self.head = nn.Sequential(nn.Linear(8, 2), nn.Linear(2, 2))


@pytest.mark.parametrize(
    "make, expected",
    [
        (TinyTransformer, lambda m: list(m.layers)),
        (
            lambda: nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)),
            lambda m: [m[0], m[2]],
        ),  # noqa: E501
        (Nested, lambda m: list(m.blocks)),
        (lambda: nn.Sequential(nn.Linear(4, 2)), lambda m: []),
        (lambda: nn.Linear(4, 2), lambda m: []),
    ],
    ids=["transformer-layers", "sequential", "nested-lists", "one-child", "no-container"],
)
def test_default_blocks_are_the_children_of_the_biggest_container(make, expected):
    model = make()
    assert [id(b) for b in default_blocks(model)] == [id(b) for b in expected(model)]


@pytest.mark.parametrize(
    "model, kwargs, message",
    [
        (TinyTransformer(), {"mp_dtype": "int8"}, "mp_dtype must be None, torch.bfloat16"),
        (TinyTransformer(), {"mp_dtype": torch.int32}, "got torch.int32"),
        (TinyTransformer(), {"wrap": 42}, "wrap must be None, a callable"),
        (TinyTransformer(), {"wrap": [int]}, "wrap must be None, a callable"),
        (nn.Linear(2, 2).requires_grad_(False), {}, "no trainable parameters"),
        ("model", {}, "expects an nn.Module, got str"),
    ],
    ids=["dtype-name", "dtype", "wrap-int", "wrap-class", "frozen", "not-a-module"],
)
def test_shard_model_rejects_bad_input_in_one_line(model, kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message) as info:
        shard_model(model, **kwargs)
    assert "\n" not in str(info.value)


def test_without_process_group_the_model_stays_whole_and_mixed_precision_warns():
    model = TinyTransformer()
    assert shard_model(model) is model and not is_sharded(model)
    with pytest.warns(UserWarning, match="mp_dtype='bf16' is not applied"):
        shard_model(model, mp_dtype="bf16")


def sharded_layouts():
    layouts = {}
    for policy in (None, [Block], lambda m: isinstance(m, Block)):
        model = shard_model(TinyTransformer(), wrap=policy)
        modules = model.named_modules()
        wrapped = sorted(name or "<root>" for name, m in modules if isinstance(m, FSDPModule))
        all_dtensor = all(isinstance(p, DTensor) for p in model.parameters())
        layouts[type(policy).__name__] = (wrapped, all_dtensor)
    try:
        shard_model(model)
    except ValueError as exc:
        return layouts, str(exc)
    return layouts, "accepted"


def test_shard_model_wraps_each_block_then_the_root(ranks2):
    layouts, again = ranks2.run(sharded_layouts)[0]
    expected = (["<root>", "layers.0", "layers.1", "layers.2"], True)
    assert layouts == {"NoneType": expected, "list": expected, "function": expected}
    assert again == "shard_model got FSDPTinyTransformer, which is already sharded"


def sharded_states(path: str):
    model, opt = build()
    train(model, opt, range(1))
    found = {
        "model": is_sharded(model),
        "state_dict": is_sharded(model.state_dict()),
        "optimizer": is_sharded(opt),
        "optimizer_state_dict": is_sharded(opt.state_dict()),
        "nested": is_sharded({"a": [1, {"b": (model.state_dict()["embed.weight"],)}]}),
        "full_state": is_sharded(full_state(model, opt)),
    }
    if get_rank() == 0:  # the reported bug: one rank's shard written as the whole model
        torch.save(model.state_dict(), path)
    return found


def test_is_sharded_finds_dtensors_wherever_they_are(ranks2, tmp_path):
    path = tmp_path / "rank0.pt"
    found = ranks2.run(sharded_states, str(path))[0]
    assert found == {
        "model": True,
        "state_dict": True,
        "optimizer": True,
        "optimizer_state_dict": True,
        "nested": True,
        "full_state": False,
    }
    written = torch.load(path, weights_only=True)  # weights_only does not catch it
    assert is_sharded(written)
    weight = written["embed.weight"]
    assert weight.shape == (37, 16) and weight.to_local().shape == (19, 16)


@pytest.mark.parametrize(
    "obj",
    [torch.ones(2), {"a": [torch.ones(1), (3, "x")]}, nn.Linear(2, 2), None, 3.0],
    ids=["tensor", "nested", "module", "none", "float"],
)
def test_is_sharded_is_false_for_plain_state(obj):
    assert is_sharded(obj) is False


CASES = {  # name: (micro-batches per step, clip norm, mixed plain and sharded gradients)
    "plain": (1, None, False),
    "accumulate": (2, None, False),
    "clip": (1, 0.5, False),
    "accumulate+clip": (3, 0.5, False),
    "clip-mixed-gradients": (1, 0.5, True),
}


def reference(accum: int, clip: float | None):
    """The same training in this process, unsharded, on the whole global batch."""
    model, opt = build(shard=False, optimizer="sgd")
    norms = train(model, opt, range(3), accum, clip)
    return {"model": dict(model.state_dict())}, norms


def _average_gradient(param: torch.Tensor) -> None:
    torch.distributed.all_reduce(param.grad)
    param.grad /= torch.distributed.get_world_size()


def sharded_training(accum: int, clip: float | None, mixed: bool):
    torch.manual_seed(0)
    model = TinyTransformer()
    if mixed:  # the head stays a plain tensor: gradients of both kinds
        for layer in model.layers:
            fully_shard(layer)
        fully_shard(model, ignored_params=set(model.head.parameters()))
        for param in model.head.parameters():  # the user averages what FSDP ignores
            param.register_post_accumulate_grad_hook(_average_gradient)
    else:
        shard_model(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    norms = train(model, opt, range(3), accum, clip)
    return full_state(model, opt).get("model"), norms


def sharded_training_cases():
    results = {name: sharded_training(*case) for name, case in CASES.items()}
    buffer = io.BytesIO()
    torch.save(results, buffer)  # tensors travel as bytes
    return buffer.getvalue()


def test_fsdp_training_matches_one_process_on_the_global_batch(ranks):
    per_rank = [
        torch.load(io.BytesIO(r), weights_only=True) for r in ranks.run(sharded_training_cases)
    ]
    for name, (accum, clip, _) in CASES.items():
        expected, expected_norms = reference(accum, clip)
        assert differences({"model": per_rank[0][name][0]}, expected, atol=1e-6) == [], name
        for results in per_rank:  # every rank clipped with the global norm
            assert results[name][1] == pytest.approx(expected_norms, rel=1e-6), name


def test_clip_grad_norm_matches_torch_on_plain_gradients():
    models = [TinyTransformer(), TinyTransformer()]
    models[1].load_state_dict(models[0].state_dict())
    x, y = batch(0)
    for model in models:
        nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten()).backward()
    expected = torch.nn.utils.clip_grad_norm_(models[0].parameters(), 0.1)
    assert torch.equal(clip_grad_norm(models[1].parameters(), 0.1), expected)
    for mine, theirs in zip(models[1].parameters(), models[0].parameters()):
        assert torch.equal(mine.grad, theirs.grad)


def test_clip_grad_norm_rejects_a_bad_max_norm():
    with pytest.raises(ValueError, match="max_norm must be a positive number, got -1"):
        clip_grad_norm(TinyTransformer().parameters(), -1)


def precision_and_offload():
    found = []
    for mp_dtype, cpu_offload in (("bf16", False), (None, True)):
        model, opt = build(mp_dtype=mp_dtype, cpu_offload=cpu_offload)
        x, _ = batch(0)
        out_dtype = model(x).dtype
        train(model, opt, range(2), clip=1.0)
        params = {p.dtype for p in model.parameters()}
        finite = all(torch.isfinite(p.full_tensor()).all() for p in model.parameters())
        found.append((out_dtype, params, finite))
    return found


def test_mixed_precision_and_cpu_offload_train_on_cpu(ranks2):
    for bf16, offload in ranks2.run(precision_and_offload):
        assert bf16 == (torch.bfloat16, {torch.float32}, True)
        assert offload == (torch.float32, {torch.float32}, True)


def test_no_gradient_sync_is_a_no_op_for_a_plain_model():
    model = nn.Linear(2, 1)
    with no_gradient_sync(model):
        model(torch.ones(1, 2)).sum().backward()
    assert torch.equal(model.weight.grad, torch.ones(1, 2))
