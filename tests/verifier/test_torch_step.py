"""PyTorch's side of tolerance mode: a trainer kept alive across steps computes the very
bits of one reloaded from every state it returns, so a provider's fast loop and the state
it opens later (recomputed from a checkpoint) agree."""

from __future__ import annotations

import numpy as np
import pytest

from tests.verifier import cases
from verifier.model import SgdHyper, init_state
from verifier.torch_step import TorchTrainer, torch_train_step

F = np.float32


@pytest.mark.parametrize(
    ("optimizer", "hyper"),
    [
        ("sgd", cases.SGD),
        ("sgd", SgdHyper(F(0.05), F(0.0), F(0.01))),
        ("sgd", SgdHyper(F(0.05), F(0.0), F(0.0))),
        ("adamw", cases.ADAMW),
    ],
    ids=["sgd-momentum", "sgd-no-momentum-decay", "sgd-plain", "adamw"],
)
def test_a_live_trainer_matches_one_reloaded_at_every_step(optimizer: str, hyper: object) -> None:
    """Eight steps of one TorchTrainer hash like eight one-step trainers chained."""
    spec = cases.spec(widths=(16, 24, 12, 4), optimizer=optimizer, examples=64, batch_size=16)
    data = cases.dataset(64, 16, 4)
    start = init_state(spec.model, optimizer, spec.seed)
    live = TorchTrainer(start, hyper)  # type: ignore[arg-type]
    reloaded = start
    for step in range(8):
        x, y = data.x[step * 4 : step * 4 + 16], data.y[step * 4 : step * 4 + 16]
        ours, loss = live.step(x, y)
        reloaded = torch_train_step(reloaded, x, y, hyper)  # type: ignore[arg-type]
        assert ours.step == reloaded.step == step + 1
        assert ours.hash() == reloaded.hash(), f"step {step}"
        assert np.isfinite(loss) and loss > 0


def test_the_trainer_reports_the_loss_before_its_step() -> None:
    """The loss a step returns is the batch's cross-entropy at the state it started from."""
    spec = cases.spec(widths=(16, 8, 4), optimizer="sgd", examples=64, batch_size=16)
    data = cases.dataset(64, 16, 4)
    start = init_state(spec.model, "sgd", spec.seed)
    x, y = data.x[:16], data.y[:16]
    _, loss = TorchTrainer(start, cases.SGD).step(x, y)
    w0, b0, w1, b1 = (a.astype(np.float64) for a in start.params)
    logits = np.maximum(x @ w0.T + b0, 0) @ w1.T + b1
    shifted = logits - logits.max(axis=1, keepdims=True)
    expected = np.mean(np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(16), y])
    assert loss == pytest.approx(expected, rel=1e-5)


def test_the_trainer_refuses_a_batch_of_the_wrong_shape() -> None:
    """A batch whose width is not the model's input is an error, not a silent broadcast."""
    spec = cases.spec(widths=(16, 8, 4), optimizer="sgd")
    start = init_state(spec.model, "sgd", spec.seed)
    with pytest.raises(ValueError):
        TorchTrainer(start, cases.SGD).step(np.zeros((4, 15), np.float32), np.zeros(4, np.int32))
