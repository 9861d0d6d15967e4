"""Sharded evaluation on gloo ranks: no sample repeated or dropped, empty shards, no DDP forward."""

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, IterableDataset

import distengine.distributed as idist
from distengine.engine import Engine, Events, create_supervised_evaluator, create_supervised_trainer
from tests.metrics.cases import assert_matches, data, make_metrics, references
from tests.multirank import RankFailure


class Rows(Dataset):
    """Row ``i`` of every tensor in ``columns`` (dict samples, as the metric cases use)."""

    def __init__(self, columns, indices):
        self.columns, self.indices = columns, list(indices)

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        return {k: v[self.indices[i]] for k, v in self.columns.items()}


def evaluate(indices, per_rank_batch=3):
    """Every metric of tests/metrics/cases.py over ``indices``, on this rank's exact shard."""
    loader = idist.auto_dataloader(
        Rows(data(), indices), batch_size=per_rank_batch * idist.get_world_size(), shuffle=False
    )
    evaluator = Engine(lambda e, b: b)
    for name, metric in make_metrics().items():
        metric.attach(evaluator, name)
    events = []
    for event in (Events.STARTED, Events.EPOCH_STARTED, Events.EPOCH_COMPLETED, Events.COMPLETED):
        evaluator.add_event_handler(event, lambda _, ev=event: events.append(ev.name))
    state = evaluator.run(loader)
    return state.metrics, len(loader.sampler), state.iteration, events


def test_evaluation_on_ranks_equals_one_process(ranks):
    # 97 samples: not divisible by 2 or 3 (a padding sampler would count duplicates)
    indices = range(97)
    want, _, _, _ = evaluate(indices)
    assert_matches(want, references(data()))
    results = ranks.run(evaluate, indices)
    for metrics, _, _, _ in results:
        assert_matches(metrics, want)
    sizes = [size for _, size, _, _ in results]
    assert sum(sizes) == 97 and max(sizes) - min(sizes) == 1


def test_a_rank_with_no_sample_joins_the_reduction(ranks3):
    d = data()
    # two samples for three ranks, both classes present so every metric is defined
    pair = [0, next(i for i in range(1, 97) if d["bin_true"][i] != d["bin_true"][0])]
    want, _, _, _ = evaluate(pair)
    results = ranks3.run(evaluate, pair)
    for metrics, _, _, _ in results:
        assert_matches(metrics, want)
    _, size, iterations, events = results[2]
    assert (size, iterations) == (0, 0)
    assert events == ["STARTED", "EPOCH_STARTED", "EPOCH_COMPLETED", "COMPLETED"]


def empty_data_with_max_iters():
    Engine(lambda e, b: b).run([], max_iters=3)


def test_an_empty_shard_cannot_reach_max_iters(ranks2):
    with pytest.raises(RankFailure, match="max_iters=3 can never be reached"):
        ranks2.run(empty_data_with_max_iters)


class Stream(IterableDataset):
    def __init__(self, n):
        self.n = n

    def __iter__(self):
        return iter(range(self.n))


def iterable_shard(n, split):
    loader = idist.auto_dataloader(Stream(n), batch_size=idist.get_world_size(), split=split)
    return [x for batch in loader for x in batch.tolist()]


@pytest.mark.parametrize("split", ["exact", "even"])
def test_an_iterable_dataset_is_sharded(ranks, split):
    # bug: every rank saw the whole stream
    world = ranks.world_size
    shards = ranks.run(iterable_shard, 11, split)
    seen = sorted(x for shard in shards for x in shard)
    if split == "exact":
        assert seen == list(range(11))
    else:
        assert len(seen) == len(set(seen)) == 11 - 11 % world
        assert len({len(shard) for shard in shards}) == 1


def ddp_train_on(split):
    model = idist.auto_model(nn.Linear(2, 2))
    loader = idist.auto_dataloader(
        [(torch.randn(2), 0) for _ in range(5)], batch_size=2, split=split
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    create_supervised_trainer(model, opt, nn.CrossEntropyLoss()).run(loader)
    return len(loader)


def test_ddp_training_refuses_an_exact_split_with_uneven_batches(ranks2):
    assert ranks2.run(ddp_train_on, "even") == [3, 3]
    with pytest.raises(RankFailure, match="gives the ranks \\[3, 2\\] batches"):
        ranks2.run(ddp_train_on, "exact")


def evaluate_ddp_with_batchnorm():
    from tests.metrics.test_ranks import CollectiveCounter

    torch.manual_seed(0)
    model = idist.auto_model(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)))
    model.module[1].running_mean.fill_(float(idist.get_rank()))  # ranks' statistics differ
    calls = []
    model.register_forward_pre_hook(lambda *_: calls.append("ddp forward"))
    evaluator = create_supervised_evaluator(model)
    batch = (torch.randn(4, 3), torch.zeros(4, dtype=torch.long))
    with CollectiveCounter() as counter:
        evaluator.run([batch] * 3)
    return calls, counter.count, model.module[1].running_mean.tolist()


def test_the_evaluator_runs_a_ddp_model_unwrapped_after_one_buffer_sync(ranks2):
    for calls, collectives, running_mean in ranks2.run(evaluate_ddp_with_batchnorm):
        assert calls == []  # DDP's forward (a buffer broadcast per batch) never ran
        assert collectives == 2  # one broadcast per buffer dtype (float32, int64), at STARTED
        assert running_mean == [0.0] * 4  # rank 0's statistics on every rank


def seeded_order(seed):
    loader = idist.auto_dataloader(list(range(8)), batch_size=4, shuffle=True, seed=seed)
    return [x for batch in loader for x in batch.tolist()]


def test_seed_works_with_one_process():
    # bug: auto_dataloader(seed=...) raised TypeError at world size 1
    assert seeded_order(3) == seeded_order(3) != seeded_order(4)
    assert sorted(seeded_order(3)) == list(range(8))


def train_and_validate_ddp():
    model = idist.auto_model(nn.Sequential(nn.Linear(2, 4), nn.Dropout(0.5), nn.Linear(4, 2)))
    modes = []
    model.module.register_forward_pre_hook(
        lambda module, _: modes.append(module.training) if torch.is_grad_enabled() else None
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = create_supervised_trainer(model, opt, nn.CrossEntropyLoss())
    evaluator = create_supervised_evaluator(model)
    data = [(torch.randn(4, 2), torch.zeros(4, dtype=torch.long))] * 2
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda: evaluator.run(data))
    trainer.run(data, max_epochs=2)
    return modes


def test_training_after_an_evaluation_of_the_unwrapped_module_is_in_train_mode(ranks2):
    # the evaluator switches model.module to eval; the next training step must switch it back
    assert ranks2.run(train_and_validate_ddp) == [[True] * 4] * 2
