"""TBPTT trainer: gradients cut every tbtt_step steps, the hidden state carried detached,
Ignite's events and numbers, DDP on 2 ranks and exact resume through a Checkpoint."""

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import distengine.distributed as idist
from distengine.engine import Engine, Tbptt_Events, create_supervised_tbptt_trainer
from distengine.engine.events import Events
from distengine.handlers import Checkpoint, find_latest_checkpoint

T, K = 10, 4  # sequence length, time steps per chunk: chunks of 4, 4 and 2


class SmallRNN(nn.Module):
    """``(x[, hidden]) -> (y, hidden)``, recording the hidden state each call receives."""

    def __init__(self, record=False):
        super().__init__()
        self.rnn = nn.RNN(2, 5, batch_first=True)
        self.head = nn.Linear(5, 1)
        self.received = [] if record else None
        self.returned = [] if record else None

    def forward(self, x, hidden=None):
        if self.received is not None:
            self.received.append(hidden)
        out, hidden = self.rnn(x, hidden)
        if self.returned is not None:
            self.returned.append(hidden)
        return self.head(out), hidden


def sequences(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, T, 2, generator=g)
    y = x.cumsum(dim=1)[..., :1] * 0.1  # depends on the whole past: memory matters
    return x, y


def test_gradients_stop_at_chunk_boundaries_and_the_hidden_state_is_carried_detached():
    torch.manual_seed(0)
    model = SmallRNN(record=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = create_supervised_tbptt_trainer(model, optimizer, nn.MSELoss(), K, dim=1)
    x, y = sequences(3)
    x.requires_grad_(True)  # d(chunk loss)/dx shows how far back each chunk's gradient reaches
    grads, losses = [torch.zeros_like(x)], []

    @trainer.on(Tbptt_Events.TIME_ITERATION_COMPLETED)
    def record(engine):
        grads.append(x.grad.clone())
        losses.append(engine.state.output)

    state = trainer.run([(x, y)])
    starts = [0, 4, 8]
    for c, start in enumerate(starts):
        added = grads[c + 1] - grads[c]  # what chunk c's backward added to x.grad
        inside = torch.zeros(T, dtype=torch.bool)
        inside[start : start + K] = True
        assert added[:, ~inside].abs().max() == 0  # truncated: nothing before the chunk
        assert added[:, inside].abs().max() > 0
    assert model.received[0] is None  # the first chunk starts from no hidden state
    for c in (1, 2):  # later chunks get the previous chunk's last hidden state, detached
        given, left = model.received[c], model.returned[c - 1]
        assert given.grad_fn is None and left.grad_fn is not None
        assert torch.equal(given, left)
    assert len(losses) == 3 and torch.equal(state.output, torch.stack(losses).double().mean())


def manual_tbptt(model, optimizer, loss_fn, x, y):
    """The same training written out by hand: step per chunk, hidden detached between."""
    hidden = None
    for x_t, y_t in zip(x.split(K, dim=1), y.split(K, dim=1)):
        optimizer.zero_grad()
        if hidden is None:
            y_pred, hidden = model(x_t)
        else:
            y_pred, hidden = model(x_t, hidden.detach())
        loss_fn(y_pred, y_t).backward()
        optimizer.step()


def train(make_trainer, batches, max_epochs=2, events_enum=Tbptt_Events):
    torch.manual_seed(0)
    model = SmallRNN()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = make_trainer(model, optimizer, nn.MSELoss(), K, 1)
    events = []
    trainer.add_event_handler(
        events_enum.TIME_ITERATION_STARTED, lambda e: events.append(e.state.iteration)
    )
    trainer.run(batches, max_epochs=max_epochs)
    return model, events


def test_equals_the_hand_written_loop_and_fires_one_event_per_chunk():
    x, y = sequences()
    batches = [(x[:4], y[:4]), (x[4:], y[4:])]
    model, events = train(create_supervised_tbptt_trainer, batches)
    torch.manual_seed(0)
    reference = SmallRNN()
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    for _ in range(2):
        for bx, by in batches:
            manual_tbptt(reference, optimizer, nn.MSELoss(), bx, by)
    for mine, theirs in zip(model.parameters(), reference.parameters()):
        assert torch.equal(mine, theirs)
    assert events == [1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]


def test_the_same_weights_as_ignites_tbptt_trainer():
    tbptt = pytest.importorskip("ignite.contrib.engines.tbptt")
    x, y = sequences()
    batches = [(x[:4], y[:4]), (x[4:], y[4:])]
    mine, _ = train(create_supervised_tbptt_trainer, batches)
    theirs, _ = train(tbptt.create_supervised_tbptt_trainer, batches, 2, tbptt.Tbptt_Events)
    for a, b in zip(mine.parameters(), theirs.parameters()):
        assert torch.equal(a, b)


def test_bad_arguments_are_named():
    model = SmallRNN()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="tbtt_step must be an int >= 1.*got 0"):
        create_supervised_tbptt_trainer(model, optimizer, nn.MSELoss(), 0)
    with pytest.raises(ValueError, match="give the chunk length once"):
        create_supervised_tbptt_trainer(model, optimizer, nn.MSELoss(), 4, tbptt_step=4)
    trainer = create_supervised_tbptt_trainer(model, optimizer, nn.MSELoss(), tbptt_step=4)
    x, y = sequences(2)
    with pytest.raises(ValueError, match="differ along the time dimension dim=0"):
        trainer.run([(x, y[:1])])


def train_on_ranks(folder, stop_at=None):
    """TBPTT under DDP over even shards; with ``stop_at``, saved there and resumed."""
    torch.manual_seed(0)
    x, y = sequences(16)
    loader = idist.auto_dataloader(TensorDataset(x, y), batch_size=4, split="even")

    def build():
        torch.manual_seed(0)
        model = idist.auto_model(SmallRNN())
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        trainer = create_supervised_tbptt_trainer(model, optimizer, nn.MSELoss(), K, dim=1)
        to_save = {"model": model, "optimizer": optimizer, "trainer": trainer}
        return model, trainer, to_save

    model, trainer, to_save = build()
    if stop_at is not None:
        checkpoint = Checkpoint(to_save, folder, n_saved=1)
        trainer.add_event_handler(Events.ITERATION_COMPLETED(once=stop_at), checkpoint)
        trainer.add_event_handler(Events.ITERATION_COMPLETED(once=stop_at), lambda e: e.terminate())
        trainer.run(loader, max_epochs=2)
        model, trainer, to_save = build()
        _, saved = find_latest_checkpoint(folder)
        Checkpoint.load_objects(to_save, saved)
    trainer.run(loader, max_epochs=2)
    module = model.module if hasattr(model, "module") else model
    return [p.detach().clone() for p in module.parameters()]


def test_ddp_on_two_ranks_equals_one_process_and_resumes_exactly(ranks2, tmp_path):
    one = train_on_ranks(None)  # 1 process: the whole batch of 4 per step
    both = ranks2.run(train_on_ranks, None)
    assert all(torch.equal(a, b) for a, b in zip(*both))  # every rank holds the same weights
    for a, b in zip(one, both[0]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)  # mean of 2 halves vs all 4
    resumed = ranks2.run(train_on_ranks, str(tmp_path), 3)
    assert all(torch.equal(a, b) for a, b in zip(both[0], resumed[0]))
    assert all(torch.equal(a, b) for a, b in zip(one, train_on_ranks(str(tmp_path / "1"), 5)))


def test_a_tbptt_trainer_is_an_engine_with_its_events_registered():
    model = SmallRNN()
    trainer = create_supervised_tbptt_trainer(
        model, torch.optim.SGD(model.parameters(), lr=0.1), nn.MSELoss(), K
    )
    assert isinstance(trainer, Engine)
    assert all(trainer.has_registered_events(e) for e in Tbptt_Events)


def test_batches_go_to_the_models_device_by_default_as_in_the_supervised_trainer():
    from distengine.engine.tbptt import TbpttStep

    rnn = torch.nn.RNN(2, 3).to(torch.device("meta"))
    step = TbpttStep(rnn, torch.optim.SGD(rnn.parameters(), lr=0.1), torch.nn.MSELoss(), 2)
    assert step.device == torch.device("meta") and step.non_blocking is False
    chosen = TbpttStep(rnn, None, None, 2, device="cpu", non_blocking=True)
    assert chosen.device == torch.device("cpu") and chosen.non_blocking is True
