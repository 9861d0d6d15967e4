"""create_supervised_trainer / create_supervised_evaluator on a small model."""

import pytest
import torch
from torch import nn

from distengine.engine import Events, create_supervised_evaluator, create_supervised_trainer


def blobs(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    return x, y


def batches(x, y, size):
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


def test_trainer_loss_goes_down():
    torch.manual_seed(0)
    x, y = blobs()
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    trainer = create_supervised_trainer(model, opt, nn.CrossEntropyLoss())
    losses = []
    trainer.add_event_handler(
        Events.EPOCH_COMPLETED, lambda e: losses.append(float(e.state.output))
    )
    trainer.run(batches(x, y, 16), max_epochs=10)
    assert losses[-1] < 0.5 * losses[0]


def test_gradient_accumulation_equals_the_large_batch_step():
    x, y = blobs(32)
    torch.manual_seed(1)
    big = nn.Linear(4, 2)
    small = nn.Linear(4, 2)
    small.load_state_dict(big.state_dict())
    loss = nn.CrossEntropyLoss()
    t_big = create_supervised_trainer(big, torch.optim.SGD(big.parameters(), lr=0.1), loss)
    t_small = create_supervised_trainer(
        small, torch.optim.SGD(small.parameters(), lr=0.1), loss, gradient_accumulation_steps=4
    )
    t_big.run(batches(x, y, 32), max_epochs=2)
    t_small.run(batches(x, y, 8), max_epochs=2)
    for a, b in zip(big.parameters(), small.parameters()):
        torch.testing.assert_close(a, b)


def test_amp_on_cpu_runs_in_bfloat16():
    x, y = blobs(16)
    model = nn.Linear(4, 2)
    dtypes = []
    model.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    trainer = create_supervised_trainer(
        model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), amp_mode="amp"
    )
    before = model.weight.detach().clone()
    trainer.run(batches(x, y, 8))
    assert dtypes == [torch.bfloat16, torch.bfloat16]
    assert not torch.equal(before, model.weight)


def test_bad_amp_and_scaler_arguments():
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="amp_mode must be None or 'amp', got 'apex'"):
        create_supervised_trainer(model, opt, nn.MSELoss(), amp_mode="apex")
    with pytest.raises(ValueError, match="scaler=True needs"):
        create_supervised_trainer(model, opt, nn.MSELoss(), scaler=True)
    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        create_supervised_trainer(model, opt, nn.MSELoss(), gradient_accumulation_steps=0)


def test_clip_grad_norm_limits_the_update():
    x, y = blobs(8)
    model = nn.Linear(4, 2)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    trainer = create_supervised_trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=1.0),
        nn.CrossEntropyLoss(),
        clip_grad_norm=1e-3,
    )
    trainer.run(batches(x, y, 8))
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert 0 < (after - before).norm() <= 1e-3 + 1e-6


def test_train_mode_set_once_and_evaluator_switches_to_eval():
    x, y = blobs(16)
    model = nn.Sequential(nn.Linear(4, 2))
    calls = []
    original = model.train

    def counting_train(mode=True):
        calls.append(mode)
        return original(mode)

    model.train = counting_train
    trainer = create_supervised_trainer(
        model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss()
    )
    evaluator = create_supervised_evaluator(model)
    modes = []
    evaluator.add_event_handler(Events.ITERATION_COMPLETED, lambda: modes.append(model.training))

    @trainer.on(Events.EPOCH_COMPLETED)
    def validate():
        evaluator.run(batches(x, y, 8))

    trainer.run(batches(x, y, 4), max_epochs=2)
    assert modes == [False] * 4
    # train() runs only when the evaluator switched modes, not on each of 8 iterations
    assert calls == [False, True, False]


def test_evaluator_outputs_predictions_and_targets_without_grad():
    x, y = blobs(8)
    model = nn.Linear(4, 2)
    evaluator = create_supervised_evaluator(model)
    state = evaluator.run(batches(x, y, 8))
    y_pred, y_out = state.output
    assert y_pred.shape == (8, 2) and not y_pred.requires_grad and torch.equal(y_out, y)


def test_prepare_batch_error_names_the_batch_type():
    model = nn.Linear(4, 2)
    evaluator = create_supervised_evaluator(model)
    with pytest.raises(ValueError, match="expects batches of \\(x, y\\); got Tensor"):
        evaluator.run([torch.zeros(2, 4)])
