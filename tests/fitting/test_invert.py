"""Tests of xfit.fitting.invert: the L-BFGS runs of the inversion."""

from __future__ import annotations

import torch


class _Uphill(torch.autograd.Function):
    """``sum(x^2)`` with the gradient's sign flipped: every line search along it finds no decrease."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x * x).sum()

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return -2.0 * x * g


def test_lbfgs_stall_reruns_on_the_fallback_loss():
    from xfit.fitting.invert import _lbfgs

    x = torch.tensor([3.0, -2.0, 1.0], requires_grad=True)
    # no fallback: the line search finds no decrease, L-BFGS stops at once, x stays put
    done = _lbfgs([x], lambda: _Uphill.apply(x), 20)
    assert done < 20 and torch.allclose(x.detach(), torch.tensor([3.0, -2.0, 1.0]))
    # with a fallback (the float32 loss in the inversion) the rest of the budget runs on it
    done = _lbfgs([x], lambda: _Uphill.apply(x), 20, lambda: (x * x).sum())  # noqa: PLW0108 (x * x is recomputed per call)
    assert done > 1 and float((x.detach() ** 2).sum()) < 1e-6
    # a run that does not stall never touches the fallback
    y = torch.tensor([1.0, 2.0], requires_grad=True)
    calls = []

    def spy():
        calls.append(1)
        return (y * y).sum()

    w = torch.tensor([1.0, -1.0])
    _lbfgs([y], lambda: ((y - w) ** 2).sum() + 0.1 * (y**4).sum(), 5, spy)
    assert not calls
