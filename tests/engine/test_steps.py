"""TrainStep: accumulation windows per epoch, precision choices, and its state in the engine's."""

import io

import pytest
import torch
from torch import nn

from distengine.engine import Engine, Events, create_supervised_trainer
from distengine.engine.steps import TrainStep


def problem(n=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return x, (x[:, 0] > 0).long()


def batches(x, y, size):
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


def steps_per_epoch(trainer, optimizer):
    counts = []
    original = optimizer.step

    def counting_step(*args, **kwargs):
        counts[-1] += 1
        return original(*args, **kwargs)

    optimizer.step = counting_step
    trainer.add_event_handler(Events.EPOCH_STARTED, lambda: counts.append(0))
    return counts


def test_windows_restart_each_epoch_and_the_last_batch_steps():
    x, y = problem(20)
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = create_supervised_trainer(
        model, opt, nn.CrossEntropyLoss(), gradient_accumulation_steps=2
    )
    counts = steps_per_epoch(trainer, opt)
    trainer.run(batches(x, y, 4), max_epochs=3)  # 5 batches: windows [1, 2], [3, 4], [5]
    assert counts == [3, 3, 3]


def test_a_window_steps_on_the_mean_of_its_micro_batches():
    # windows of 2 batches of 4 (and a last one of 1 batch) equal plain steps on 8 (and 4)
    x, y = problem(20)
    torch.manual_seed(1)
    plain, accumulated = nn.Linear(4, 2), nn.Linear(4, 2)
    accumulated.load_state_dict(plain.state_dict())
    loss = nn.CrossEntropyLoss()
    big = [(x[0:8], y[0:8]), (x[8:16], y[8:16]), (x[16:20], y[16:20])]
    create_supervised_trainer(plain, torch.optim.SGD(plain.parameters(), lr=0.5), loss).run(
        big, max_epochs=2
    )
    opt = torch.optim.SGD(accumulated.parameters(), lr=0.5)
    trainer = create_supervised_trainer(accumulated, opt, loss, gradient_accumulation_steps=2)
    trainer.run(batches(x, y, 4), max_epochs=2)
    for a, b in zip(plain.parameters(), accumulated.parameters()):
        torch.testing.assert_close(a, b)


def test_max_iters_steps_at_the_last_iteration():
    x, y = problem(20)
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = create_supervised_trainer(
        model, opt, nn.CrossEntropyLoss(), gradient_accumulation_steps=3
    )
    counts = steps_per_epoch(trainer, opt)
    trainer.run(batches(x, y, 4), max_iters=7)  # epoch 1: [1-3], [4-5]; epoch 2: [6-7] cut
    assert counts == [2, 1]
    assert trainer.state_dict()["process_function"]["pending_grads"] is None  # none left open


def test_accumulation_needs_the_epoch_length():
    x, y = problem(8)
    model = nn.Linear(4, 2)
    trainer = create_supervised_trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        nn.CrossEntropyLoss(),
        gradient_accumulation_steps=2,
    )
    with pytest.raises(ValueError, match="gradient_accumulation_steps=2 needs the epoch length"):
        trainer.run(iter(batches(x, y, 2)), max_epochs=1)


def saved_mid_window(amp):
    x, y = problem(24)
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0, growth_interval=1) if amp else False
    options = dict(amp_mode="amp", amp_dtype=torch.float16, scaler=scaler) if amp else {}
    trainer = create_supervised_trainer(
        model, opt, nn.CrossEntropyLoss(), gradient_accumulation_steps=3, **options
    )
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=5), lambda e: e.terminate())
    trainer.run(batches(x, y, 4), max_epochs=1)
    buffer = io.BytesIO()
    torch.save(trainer.state_dict(), buffer)
    return model, torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)


def test_state_holds_the_pending_gradients_and_the_scaler():
    model, state = saved_mid_window(amp=True)
    step_state = state["process_function"]
    assert step_state["scaler"]["scale"] == 16.0  # grown once after the step at iteration 3
    assert torch.equal(step_state["pending_grads"][0], model.weight.grad)
    fresh = nn.Linear(4, 2)
    scaler = torch.amp.GradScaler("cpu")
    step = TrainStep(
        fresh,
        torch.optim.SGD(fresh.parameters(), lr=0.1),
        nn.CrossEntropyLoss(),
        amp_mode="amp",
        amp_dtype="float16",
        scaler=scaler,
    )
    Engine(step).load_state_dict(state)
    assert scaler.get_scale() == 16.0 and torch.equal(fresh.weight.grad, model.weight.grad)


def test_state_saved_between_windows_holds_no_gradients():
    x, y = problem(8)
    model = nn.Linear(4, 2)
    trainer = create_supervised_trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        nn.CrossEntropyLoss(),
        gradient_accumulation_steps=2,
    )
    trainer.run(batches(x, y, 2), max_epochs=1)
    assert trainer.state_dict()["process_function"] == {"scaler": None, "pending_grads": None}


def test_a_checkpoint_with_a_scaler_refuses_a_step_without_one():
    _, state = saved_mid_window(amp=True)
    model = nn.Linear(4, 2)
    trainer = create_supervised_trainer(
        model, torch.optim.SGD(model.parameters(), lr=0.1), nn.MSELoss()
    )
    with pytest.raises(ValueError, match="had a GradScaler, this one has none"):
        trainer.load_state_dict(state)


@pytest.mark.parametrize(
    "options, message",
    [
        (
            dict(amp_mode="amp", amp_dtype="float8"),
            "amp_dtype must be torch.float16, torch.bfloat16",
        ),
        (dict(amp_dtype=torch.bfloat16), "amp_dtype=torch.bfloat16 needs amp_mode='amp'"),
        (dict(amp_mode="amp", scaler=True), "scaler=True needs amp_mode='amp' with float16"),
        (dict(gradient_accumulation_steps=True), "gradient_accumulation_steps must be an int"),
    ],
)
def test_bad_precision_arguments_name_the_value(options, message):
    model = nn.Linear(4, 2)
    with pytest.raises(ValueError, match=message):
        create_supervised_trainer(
            model, torch.optim.SGD(model.parameters(), lr=0.1), nn.MSELoss(), **options
        )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_amp_dtype_picks_the_autocast_dtype(dtype):
    x, y = problem(8)
    model = nn.Linear(4, 2)
    seen = []
    model.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    trainer = create_supervised_trainer(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        nn.CrossEntropyLoss(),
        amp_mode="amp",
        amp_dtype=dtype,
    )
    trainer.run(batches(x, y, 4))
    step = trainer.process_function
    assert seen == [dtype, dtype] and (step.scaler is not None) == (dtype == torch.float16)


@pytest.mark.gpu
def test_fp16_with_grad_scaler_resumes_bitwise_on_cuda():
    from tests.resume.scenario import differences

    def run(stop=None):
        torch.manual_seed(0)
        x, y = problem(64)
        model = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 2)).cuda()
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        trainer = create_supervised_trainer(
            model, opt, nn.CrossEntropyLoss(), amp_mode="amp", gradient_accumulation_steps=2
        )
        data = batches(x.cuda(), y.cuda(), 8)
        if stop is not None:
            trainer.add_event_handler(
                Events.ITERATION_COMPLETED(once=stop), lambda e: e.terminate()
            )
            trainer.run(data, max_epochs=3)
            buffer = io.BytesIO()
            torch.save(
                {"m": model.state_dict(), "o": opt.state_dict(), "t": trainer.state_dict()}, buffer
            )
            state = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
            torch.manual_seed(99)
            model = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 2)).cuda()
            opt = torch.optim.Adam(model.parameters(), lr=1e-2)
            trainer = create_supervised_trainer(
                model, opt, nn.CrossEntropyLoss(), amp_mode="amp", gradient_accumulation_steps=2
            )
            model.load_state_dict(state["m"])
            opt.load_state_dict(state["o"])
            trainer.load_state_dict(state["t"])
        trainer.run(data, max_epochs=3)
        return {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scaler": trainer.process_function.scaler.state_dict(),
        }

    want = run()
    for stop in (3, 8, 13):
        assert differences(want, run(stop)) == [], f"stop at {stop}"
