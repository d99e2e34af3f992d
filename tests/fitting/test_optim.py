"""``xfit.fitting.optim``: the fit's Adam and L-BFGS, bit for bit ``torch.optim``'s, without
importing ``torch._dynamo``."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from xfit.fitting.optim import LBFGS, Adam


def _quadratic(n: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=gen)
    return a @ a.T / n + 0.1 * torch.eye(n), torch.randn(n, generator=gen)


def test_adam_matches_torch_step_for_step_with_groups_rates_missing_grads_and_dropped_state():
    """Two groups with extra keys, rates changed every step, a parameter without a gradient in
    some steps and a state dropped halfway: every parameter equals torch.optim.Adam's exactly."""
    a, b = _quadratic()
    runs = []
    for cls in (Adam, torch.optim.Adam):
        torch.manual_seed(1)
        x, y = torch.randn(40, requires_grad=True), torch.randn(3, 40, requires_grad=True)
        opt = cls([{"params": [x], "name": "w", "restart": 0}, {"params": [y], "name": "n", "restart": 0}], lr=0.05)
        for step in range(30):
            for k, g in enumerate(opt.param_groups):
                g["lr"] = 0.05 * (1 + k) * (1 - step / 40)
            opt.zero_grad(set_to_none=True)
            loss = 0.5 * x @ a @ x - b @ x + (y**2).sum() * 0.1 + (y.sum(0) * x).sum() * 0.01
            loss.backward()
            if step % 7 == 3:
                y.grad = None  # frozen this step: no update, no state change
            opt.step()
            if step == 15:
                opt.state.pop(y, None)  # as a diverged restart's reset does
        assert opt.param_groups[0]["name"] == "w" and opt.param_groups[1]["restart"] == 0
        runs.append((x.detach().clone(), y.detach().clone()))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
    moved = runs[0][0] - torch.randn(40, generator=torch.Generator().manual_seed(1))
    assert moved.abs().max() > 0  # the test can fail: the parameters did move


def test_lbfgs_matches_torch_including_a_seeded_history():
    """The strong-Wolfe L-BFGS of the fit's inversion gives torch's iterates exactly, also when a
    second run continues the first one's curvature history (``invert._seed``)."""
    from xfit.fitting.invert import LbfgsHistory, _seed

    a, b = _quadratic()
    kw = dict(lr=1.0, max_iter=6, max_eval=8, history_size=5, line_search_fn="strong_wolfe")
    kw.update(tolerance_grad=0.0, tolerance_change=0.0)

    def run(cls) -> torch.Tensor:
        x = torch.zeros(40, requires_grad=True)

        def step(opt) -> None:
            def closure() -> torch.Tensor:
                opt.zero_grad(set_to_none=True)
                loss = 0.5 * x @ a @ x - b @ x
                loss.backward()
                return loss

            opt.step(closure)

        first = cls([x], **kw)
        step(first)
        s = first.state[x]
        second = cls([x], **kw)
        assert _seed(second, [x], LbfgsHistory(s["old_stps"], s["old_dirs"], s["ro"], s["H_diag"]))
        step(second)
        return x.detach().clone()

    out = [run(LBFGS), run(torch.optim.LBFGS)]
    assert torch.equal(out[0], out[1])
    assert float(0.5 * out[0] @ a @ out[0] - b @ out[0]) < 0.0  # it did descend from 0


def test_lbfgs_keeps_torchs_one_group_rule():
    with pytest.raises(ValueError, match="parameter groups"):
        LBFGS([{"params": [torch.zeros(2, requires_grad=True)]}, {"params": [torch.zeros(2, requires_grad=True)]}])
    with pytest.raises(ValueError, match="empty parameter list"):
        Adam([])


def test_a_fit_and_an_inversion_import_no_dynamo(tiny_prior_file):
    """The fit (Adam) and the inversion (L-BFGS) run in a fresh process without importing
    ``torch._dynamo`` (1.3-1.8 s of a 2-core CPU, ``bench/startup_costs.py``)."""
    code = textwrap.dedent(
        f"""
        import sys
        import numpy as np, torch
        torch.set_num_threads(1)
        from xfit.fitting import fit, load_fit_config
        from xfit.fitting.invert import invert_volume
        from xfit.geometry import View
        from xfit.io import hu_to_mu
        from xfit.prior.checkpoint import load_prior
        from xfit.prior.sample import prior_affine
        from xfit.projector import project
        prior = load_prior({str(tiny_prior_file())!r})
        r = prior.config.resolution
        hu = torch.full((1, r, r, r), -500.0)
        hu[:, r // 4 : 3 * r // 4, r // 4 : 3 * r // 4, r // 4 : 3 * r // 4] = 500.0
        invert_volume(prior, hu[0].numpy(), steps=2, optimize_noise=False, optimizer="lbfgs", outputs=False)
        views = [View(angle_deg=a, sdd_mm=1000.0, sod_mm=800.0, shape=(16, 16), pixel_spacing_mm=(6.0, 6.0))
                 for a in (0.0, 90.0)]
        with torch.no_grad():
            images = [im.numpy() for im in project(hu_to_mu(hu)[:, None], prior_affine(prior), views)[0]]
        cfg = load_fit_config(steps=2, restarts=1, init_network=None, init_samples=0, early_stop_tol=0.0)
        fit(prior, images, views, cfg, progress=False)
        print("dynamo" if "torch._dynamo" in sys.modules else "none")
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "none"
