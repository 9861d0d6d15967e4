"""auto_dataloader, auto_model and a 2-rank training run against a single process."""

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import distengine.distributed as idist
from distengine.engine import Engine, Events, create_supervised_trainer
from tests.multirank import RankFailure


def epochs_seen(n_samples, batch_size, shuffle, drop_last, epochs=3):
    loader = idist.auto_dataloader(
        list(range(n_samples)), batch_size=batch_size, shuffle=shuffle, drop_last=drop_last
    )
    per_epoch = []
    engine = Engine(lambda e, b: b.tolist())
    engine.add_event_handler(Events.EPOCH_STARTED, lambda: per_epoch.append([]))
    engine.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: per_epoch[-1].extend(e.state.output)
    )
    engine.run(loader, max_epochs=epochs)
    return loader.batch_size, per_epoch


def test_auto_dataloader_shards_each_sample_once_and_reshuffles_per_epoch(ranks):
    n = ranks.world_size
    results = ranks.run(epochs_seen, 12 * n, 4 * n, True, False)
    assert all(batch_size == 4 for batch_size, _ in results)
    for epoch in range(3):
        union = sorted(x for _, per_epoch in results for x in per_epoch[epoch])
        assert union == list(range(12 * n))
    orders = [per_epoch for _, per_epoch in results]
    assert orders[0][0] != orders[0][1]  # reshuffled each epoch (set_epoch called)
    again = ranks.run(epochs_seen, 12 * n, 4 * n, True, False)
    assert [p for _, p in again] == orders  # same order on a rerun: ranks agree on the seed


def test_auto_dataloader_drop_last_never_repeats(ranks2):
    results = ranks2.run(epochs_seen, 11, 4, False, True, 1)
    seen = [x for _, per_epoch in results for x in per_epoch[0]]
    # the sampler drops the odd sample (5 per rank), the loader the short batch (4 per rank)
    assert len(seen) == len(set(seen)) == 8


def bad_batch_size():
    idist.auto_dataloader(list(range(4)), batch_size=1)


def test_auto_dataloader_rejects_a_global_batch_smaller_than_the_world(ranks2):
    with pytest.raises(RankFailure, match="batch_size=1 is the global batch and cannot be split"):
        ranks2.run(bad_batch_size)


def ddp_gradients(x, y):
    torch.manual_seed(0)
    model = idist.auto_model(nn.Linear(3, 1))
    r, n = idist.get_rank(), idist.get_world_size()
    share = len(x) // n
    loss = nn.functional.mse_loss(
        model(x[r * share : (r + 1) * share]), y[r * share : (r + 1) * share]
    )
    loss.backward()
    return type(model).__name__, [p.grad.clone() for p in model.parameters()]


def test_auto_model_ddp_gradients_equal_the_single_process_gradient(ranks):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(12, 3, generator=g), torch.randn(12, 1, generator=g)
    torch.manual_seed(0)
    single = nn.Linear(3, 1)
    nn.functional.mse_loss(single(x), y).backward()
    for name, grads in ranks.run(ddp_gradients, x, y):
        assert name == "DistributedDataParallel"
        for got, want in zip(grads, (p.grad for p in single.parameters())):
            torch.testing.assert_close(got, want)


def make_problem():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(48, 5, generator=g)
    y = (x.sum(1) > 0).long()
    return TensorDataset(x, y)


def train_two_epochs(global_batch):
    idist.manual_seed(0)
    model = idist.auto_model(nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 2)))
    opt = idist.auto_optim(torch.optim.SGD(model.parameters(), lr=0.3))
    loader = idist.auto_dataloader(make_problem(), batch_size=global_batch, shuffle=True)
    create_supervised_trainer(model, opt, nn.CrossEntropyLoss()).run(loader, max_epochs=2)
    module = getattr(model, "module", model)
    return {k: v.clone() for k, v in module.state_dict().items()}


def single_process_on_the_same_global_batches(n_ranks, global_batch):
    """One process, fed per step the union of what the n ranks saw (same order)."""
    from torch.utils.data.distributed import DistributedSampler

    idist.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.3)
    data = make_problem()
    per_rank = global_batch // n_ranks
    for epoch in range(2):
        shards = []
        for r in range(n_ranks):
            sampler = DistributedSampler(data, num_replicas=n_ranks, rank=r, shuffle=True)
            sampler.set_epoch(epoch)
            shards.append(list(sampler))
        for start in range(0, len(shards[0]), per_rank):
            idx = [i for shard in shards for i in shard[start : start + per_rank]]
            x, y = data[idx]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    return model.state_dict()


def test_two_epochs_on_ranks_equal_a_single_process_on_the_global_batches(ranks):
    n = ranks.world_size
    results = ranks.run(train_two_epochs, 4 * n)
    expected = single_process_on_the_same_global_batches(n, 4 * n)
    for weights in results:
        for key, value in expected.items():
            torch.testing.assert_close(weights[key], value, rtol=1e-5, atol=1e-6)
