"""create_supervised_trainer/evaluator with PyTorch-Ignite's arguments: model_transform, model_fn,
deterministic and their positions; the same weights as Ignite where it is installed."""

import warnings

import pytest
import torch
from torch import nn

import distengine.engine as de
from distengine.engine.steps import prepare_batch
from distengine.metrics import Accuracy

try:
    import ignite.engine as ie
    import ignite.metrics as im
except ImportError:
    ie = im = None


class DictModel(nn.Module):
    """A model whose output is a dict, as many hub models return."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x):
        return {"logits": self.linear(x), "aux": x.sum()}


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(24, 4, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()  # learnable
    return [(x[i : i + 4], y[i : i + 4]) for i in range(0, 24, 4)]


def pick_logits(output):
    return output["logits"]


def train(lib, positional=False, accumulation=1, **kwargs):
    torch.manual_seed(0)
    model = DictModel()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = nn.CrossEntropyLoss()
    if positional:  # Ignite's positions: device, non_blocking, prepare_batch, model_transform
        trainer = lib.create_supervised_trainer(
            model, optimizer, loss_fn, "cpu", False, prepare_batch, pick_logits, **kwargs
        )
    else:
        trainer = lib.create_supervised_trainer(
            model,
            optimizer,
            loss_fn,
            model_transform=pick_logits,
            gradient_accumulation_steps=accumulation,
            **kwargs,
        )
    losses = []
    trainer.add_event_handler(
        lib.Events.ITERATION_COMPLETED, lambda e: losses.append(float(e.state.output))
    )
    trainer.run(data(), max_epochs=2)
    return trainer, model, losses


@pytest.mark.parametrize("positional", [False, True], ids=["keywords", "positions"])
def test_model_transform_feeds_the_loss(positional):
    trainer, model, losses = train(de, positional=positional)
    assert len(losses) == 12 and sum(losses[6:]) < sum(losses[:6])  # it learns
    if ie is not None:
        _, theirs, their_losses = train(ie, positional=positional)
        assert losses == their_losses
        for mine, other in zip(model.parameters(), theirs.parameters()):
            assert torch.equal(mine, other)


def test_accumulation_that_divides_the_epoch_equals_ignite():
    _, model, losses = train(de, accumulation=3)
    if ie is None:
        pytest.skip("compares with pytorch-ignite")
    _, theirs, their_losses = train(ie, accumulation=3)
    assert losses == pytest.approx(their_losses, rel=1e-6)
    for mine, other in zip(model.parameters(), theirs.parameters()):
        assert torch.equal(mine, other)


def test_accumulation_that_does_not_divide_the_epoch_warns():
    with pytest.warns(UserWarning, match="gradient_accumulation_steps=4 does not divide"):
        train(de, accumulation=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train(de, accumulation=2)


def test_model_fn_and_deterministic():
    calls = []

    def model_fn(model, x):
        calls.append(x.shape[0])
        return model(x)

    trainer, _, _ = train(de, model_fn=model_fn, deterministic=True)
    assert isinstance(trainer, de.DeterministicEngine) and calls == [4] * 12


def evaluate(lib, metrics_lib, positional):
    torch.manual_seed(0)
    model = DictModel()
    metrics = {"accuracy": metrics_lib.Accuracy()}
    if positional:
        evaluator = lib.create_supervised_evaluator(
            model, metrics, "cpu", False, prepare_batch, pick_logits
        )
    else:
        evaluator = lib.create_supervised_evaluator(model, metrics, model_transform=pick_logits)
    evaluator.run(data())
    return evaluator.state.metrics["accuracy"], evaluator.state.output[0].shape


@pytest.mark.parametrize("positional", [False, True], ids=["keywords", "positions"])
def test_evaluator_model_transform(positional):
    import distengine.metrics as dm

    accuracy, shape = evaluate(de, dm, positional)
    assert shape == (4, 3) and 0 <= accuracy <= 1
    assert isinstance(dm.Accuracy(), Accuracy)
    if ie is not None:
        assert (accuracy, shape) == evaluate(ie, im, positional)
