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


def test_lbfgs_stall_bridges_on_the_fallback_then_resumes(monkeypatch):
    """After a stall: ``bridge`` iterations on the fallback, the rest on the loss; a second stall
    hands the rest to the fallback (the runs scripted: which loss, how many iterations)."""
    from xfit.fitting import invert

    runs = []
    script = iter([(3, True), (5, False), (20, False)])  # stall at 3, bridge 5, the rest runs

    def fake(params, loss, steps, history=None):
        runs.append((loss, steps))
        return (*next(script), None)

    monkeypatch.setattr(invert, "_lbfgs_run", fake)
    assert invert._lbfgs([], "bf16", 28, "fp32", bridge=5)[0] == 28
    assert runs == [("bf16", 28), ("fp32", 5), ("bf16", 20)]
    runs.clear()
    script = iter([(1, True), (5, False), (4, True), (18, False)])  # stalls again after the bridge
    assert invert._lbfgs([], "bf16", 28, "fp32", bridge=5)[0] == 28
    assert runs == [("bf16", 28), ("fp32", 5), ("bf16", 22), ("fp32", 18)]
    runs.clear()
    script = iter([(28, False)])  # no stall: the fallback is never run
    assert invert._lbfgs([], "bf16", 28, "fp32")[0] == 28 and runs == [("bf16", 28)]


def test_lbfgs_stall_reruns_on_the_fallback_loss():
    from xfit.fitting.invert import _lbfgs

    x = torch.tensor([3.0, -2.0, 1.0], requires_grad=True)
    # no fallback: the line search finds no decrease, L-BFGS stops at once, x stays put
    done, _ = _lbfgs([x], lambda: _Uphill.apply(x), 20)
    assert done < 20 and torch.allclose(x.detach(), torch.tensor([3.0, -2.0, 1.0]))
    # with a fallback (the float32 loss in the inversion) the rest of the budget runs on it
    done, _ = _lbfgs([x], lambda: _Uphill.apply(x), 20, lambda: (x * x).sum())  # noqa: PLW0108 (x * x is recomputed per call)
    assert done > 1 and float((x.detach() ** 2).sum()) < 1e-6
    # after a stall, a few iterations on the fallback, then the loss again (which stalls again
    # here, so the fallback takes the rest)
    x = torch.tensor([3.0, -2.0, 1.0], requires_grad=True)
    calls = {"loss": 0, "fallback": 0}

    def uphill():
        calls["loss"] += 1
        return _Uphill.apply(x)

    def plain():
        calls["fallback"] += 1
        return (x * x).sum()

    done, _ = _lbfgs([x], uphill, 20, plain, bridge=1)
    assert done > 2 and calls["loss"] >= 2 and calls["fallback"] >= 2 and float((x.detach() ** 2).sum()) < 1e-6
    # a run that does not stall never touches the fallback
    y = torch.tensor([1.0, 2.0], requires_grad=True)
    calls = []

    def spy():
        calls.append(1)
        return (y * y).sum()

    w = torch.tensor([1.0, -1.0])
    _lbfgs([y], lambda: ((y - w) ** 2).sum() + 0.1 * (y**4).sum(), 5, spy)
    assert not calls


def test_a_seeded_lbfgs_run_starts_with_a_quasi_newton_step():
    """The history of an earlier run over the same parameters makes the first iteration of the
    next a step of the right scale: on an ill-conditioned quadratic, three seeded iterations go
    much further down than three unseeded ones (whose first step, of unit L1 length, costs the
    line search extra evaluations from the same budget); the iterations are counted from the
    seeded run's start, and a history of other parameters is ignored."""
    from xfit.fitting.invert import _lbfgs_run

    torch.manual_seed(0)
    a = torch.logspace(0, 2, 40)
    x = torch.randn(40, requires_grad=True)

    def loss():
        return 0.5 * (a * x * x).sum()

    n, stalled, history = _lbfgs_run([x], loss, 15)
    assert n == 15 and not stalled and history is not None and len(history.steps) > 0
    start = torch.randn(40)
    after = {}
    for name, seed in (("plain", None), ("seeded", history)):
        with torch.no_grad():
            x.copy_(start)
        n, _, _ = _lbfgs_run([x], loss, 3, seed)
        assert n == 3 or seed is None
        after[name] = float(loss())
    assert after["seeded"] < 0.5 * after["plain"] < 0.5 * float(0.5 * (a * start * start).sum())
    y = torch.randn(7, requires_grad=True)
    n, _, _ = _lbfgs_run([y], lambda: y.square().sum(), 3, history)  # 40-long pairs: not used
    assert n == 3


def test_the_fine_inversion_continues_the_coarse_ones_history(tiny_prior, monkeypatch):
    """``network_start``'s full-resolution inversion is seeded with the curvature history of the
    coarse one (L-BFGS; Adam keeps none)."""
    import numpy as np

    from xfit.fitting import hybrid, invert

    seen, weights = [], []
    real = invert.invert_volume

    def spy(*args, **kwargs):
        seen.append(kwargs.get("history"))
        weights.append(kwargs.get("label_weight"))
        out = real(*args, **kwargs)
        assert (out.lbfgs_history is None) == (kwargs.get("optimizer") != "lbfgs")
        return out

    monkeypatch.setattr(hybrid, "invert_volume", spy)
    r = int(tiny_prior.config.resolution)
    hu = np.full((r, r, r), 100.0, np.float32)
    lab = np.zeros((r, r, r), bool)
    monkeypatch.setattr(hybrid, "grid_mismatch", lambda *a: None)
    monkeypatch.setattr(hybrid, "network_parts", lambda m: [m])
    monkeypatch.setattr(hybrid, "network_checkpoint", lambda part, ckpt: (part, None))
    from xfit.baselines import infer

    class _Cfg:
        class views:
            angles_deg = (0.0, 90.0)

    monkeypatch.setattr(infer, "load_baseline", lambda base, path: type("B", (), {"config": _Cfg})())
    monkeypatch.setattr(infer, "predict", lambda *a, **k: (hu, lab, None, {"label_prob": lab.astype(np.float32)}))
    for optimizer, label_weight in (("lbfgs", 0.1), ("adam", 0.0)):
        seen.clear()
        weights.clear()
        hybrid.network_start(
            tiny_prior, [None, None], [None, None], (0, 0, 0), "xctrsnet",
            steps=2, resolution=r // 2, fine_steps=2, optimizer=optimizer, label_weight=label_weight,
        )  # fmt: skip
        assert seen[0] is None
        assert (seen[1] is not None) == (optimizer == "lbfgs")
        assert weights == [label_weight, label_weight]  # both parts of the inversion


def test_w_plus_alone_runs_the_generator_without_noise_maps_to_the_same_bits(tiny_prior):
    """With W+ alone (``optimize_noise=False``) the inversion runs the generator without noise
    (``noise_mode="none"``): the loss and its gradient are those of zero maps, bit for bit, in
    float32 and under bf16 autocast, and the returned maps are zero."""
    from xfit.fitting.invert import _terms, invert_volume

    G = tiny_prior.G
    r = int(tiny_prior.config.resolution)
    torch.manual_seed(0)
    unit = torch.rand(1, r, r, r) * 2 - 1
    lab = (torch.rand(1, r, r, r) > 0.7).float()
    mean, std = tiny_prior.w_mean.float(), tiny_prior.w_std.float()
    for amp in (False, True):
        out = []
        for noise in (None, [torch.zeros(1, *s[1:], requires_grad=True) for s in G.synthesis.noise_shapes()]):
            u = (0.3 * torch.randn(1, G.num_ws, G.w_dim, generator=torch.Generator().manual_seed(1))).requires_grad_()
            terms = _terms(tiny_prior, u, noise, unit, lab, mean, std, 0.1, 0.01, 0.1, None, amp)
            terms["total"].backward()
            out.append((terms["mse"].detach(), terms["total"].detach(), u.grad))
        assert all(torch.equal(a, b) for a, b in zip(out[0], out[1]))
        # the noise does matter in this generator: non-zero maps give another volume
        noisy = _terms(tiny_prior, u.detach(), list(G.synthesis.make_noise(1)), unit, lab, mean, std, 0.1, 0.0, 0.1)
        assert abs(float(noisy["mse"]) - float(out[0][0])) > 1e-6
    inv = invert_volume(tiny_prior, unit[0] * 500, steps=2, optimize_noise=False, optimizer="lbfgs", outputs=False)
    assert all(not n.any() for n in inv.noise)
