"""Invert a 3D volume into the prior: W+ (and noise) whose generated volume matches a given CT.

Two uses, one piece of code:

* the **ceiling** of a case (``xfit evaluate --methods ceiling``): the prior fitted to the 3D
  truth itself. No method that stays on the prior's manifold can beat it, so it tells whether a
  miss of the X-ray fit comes from the search (fit far below the ceiling) or from the prior
  (ceiling low). It is an oracle: it sees the truth.
* the **hybrid start** of the X-ray fit (``init: xctrsnet``): a feed-forward network's predicted
  volume inverted into W+, which the X-ray fit then refines
  (:func:`xfit.fitting.optimize.fit` with ``w_init``/``noise_init``).

The loss is the mean squared error of the intensity channel on the prior's unit scale (HU
clamped to the prior's window, mapped to [-1, 1]) plus the binary cross-entropy of the label
channel against the vertebra mask, with the same Gaussian/noise priors as the X-ray fit
(weights ``lambda_w``, ``lambda_n``) so that the result stays a plausible generator input.
Two optimisers over ``u`` (W+ = ``w_mean + w_std * u``) and the noise maps:

* ``adam``: as the X-ray fit, with the stylegan2-ada learning-rate ramp;
* ``lbfgs``: L-BFGS with a strong-Wolfe line search (``steps`` iterations, at most 1.25 generator
  passes each). The 3D loss is smooth and deterministic, which is where a quasi-Newton method
  pays: on held-out phantoms 40 L-BFGS iterations come within 1.5 % of the loss of 200 Adam steps
  in a quarter of the time, and 80-120 go well below it (``docs/fit.md``, "The ceiling" and "The
  fourth run").
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError
from ..prior.checkpoint import Prior
from ..prior.sample import generate_hu, synthesize
from ..units import hu_to_unit
from .config import INVERSION_OPTIMIZERS
from .objective import noise_prior, w_gaussian_prior
from .schedule import lr_schedule

#: Adam steps of the oracle ceiling (``xfit evaluate --methods ceiling``, ``reconstruct --method
#: ceiling``), as the fit issue defines it, so that every committed ceiling row stays comparable.
#: A conservative bound: on held-out phantoms 0 and 1, 100 steps give 0.45-0.6 dB less PSNR than
#: 200, and L-BFGS on the same loss (80-120 iterations) 0.5-0.6 dB more (docs/fit.md).
CEILING_STEPS = 200
#: L-BFGS iterations of the tighter ceiling (``xfit evaluate --methods ceiling-lbfgs``): the same
#: loss, minimised well below what :data:`CEILING_STEPS` Adam steps reach (docs/fit.md).
CEILING_LBFGS_STEPS = 120
#: L-BFGS history (pairs of steps and gradient changes kept).
LBFGS_HISTORY = 20
#: Iterations on the float32 loss after a stalled bf16 L-BFGS run, before bf16 resumes (:func:`_lbfgs`).
LBFGS_BRIDGE = 5


@dataclass
class Inversion:
    """Result of :func:`invert_volume`.

    Attributes:
        w_plus: ``[num_ws, w_dim]`` fitted styles.
        noise: fitted noise maps, each ``[1, r, r, r]`` (generator layout without the batch).
        hu: ``[R, R, R]`` float32 HU of the generated volume, clamped to the prior's window
            (``None`` when :func:`invert_volume` was asked for W+ alone).
        label_prob: ``[R, R, R]`` float32 sigmoid of the label logit (or ``None``, as ``hu``).
        loss: final loss terms (``mse``, ``bce``, ``w_gauss``, ``noise``, ``total``; empty with
            W+ alone).
        seconds: wall time.
        lbfgs_history: the curvature pairs of an ``lbfgs`` inversion's last run
            (:class:`LbfgsHistory`; ``None`` after Adam), for a run that continues it.
    """

    w_plus: np.ndarray
    noise: list[np.ndarray]
    hu: np.ndarray | None
    label_prob: np.ndarray | None
    loss: dict[str, float]
    seconds: float
    lbfgs_history: LbfgsHistory | None = field(default=None, repr=False)


@dataclass
class LbfgsHistory:
    """What an L-BFGS run learnt of its loss's curvature, to seed a run that continues it.

    Attributes:
        steps: the last steps ``s``, each flat ``[P]`` over the run's parameters.
        grad_changes: the matching changes of the gradient ``y``, each ``[P]``.
        rho: ``1 / (y . s)`` of each pair.
        h_diag: the scale of the initial inverse Hessian, ``y . s / y . y`` of the last pair.
    """

    steps: list[Tensor]
    grad_changes: list[Tensor]
    rho: list[Tensor]
    h_diag: Tensor | float


def check_target(
    prior: Prior, hu: np.ndarray | Tensor, label: np.ndarray | Tensor | None
) -> tuple[Tensor, Tensor | None]:
    """The target on the prior's unit scale ``[1, R, R, R]`` and the label ``[1, R, R, R]`` in {0, 1}.

    Raises:
        InputError: a volume that is not ``R^3`` of the prior's resolution, or not finite.
    """
    r = int(prior.config.resolution)
    hu_t = torch.as_tensor(np.asarray(hu, dtype=np.float32))
    if tuple(hu_t.shape) != (r, r, r):
        raise InputError(f"the volume to invert must be {r}^3 on the prior's grid, got {list(hu_t.shape)}")
    if not bool(torch.isfinite(hu_t).all()):
        raise InputError("the volume to invert holds NaN or Inf")
    unit = hu_to_unit(hu_t, tuple(prior.config.hu_window))[None]
    lab = None
    if label is not None:
        lab = torch.as_tensor(np.asarray(label, dtype=np.float32))
        if tuple(lab.shape) != (r, r, r):
            raise InputError(f"the label to invert must be {r}^3, got {list(lab.shape)}")
        lab = (lab > 0.5).float()[None]
    return unit, lab


def pool_to(volume: Tensor, resolution: int) -> Tensor:
    """Average-pool ``[..., R, R, R]`` to ``[..., r, r, r]`` (``r = resolution`` divides ``R``):
    a prior-grid volume at one of the generator's coarser block outputs."""
    k = volume.shape[-1] // int(resolution)
    if k == 1:
        return volume
    lead = volume.shape[:-3]
    out = F.avg_pool3d(volume.reshape(-1, 1, *volume.shape[-3:]), k)
    return out.reshape(*lead, *out.shape[-3:])


def invert_volume(
    prior: Prior,
    hu: np.ndarray | Tensor,
    label: np.ndarray | Tensor | None = None,
    *,
    steps: int = 150,
    lr: float = 0.1,
    optimize_noise: bool = True,
    lambda_w: float = 0.001,
    lambda_n: float = 0.01,
    label_weight: float = 0.1,
    w_init: Tensor | None = None,
    resolution: int | None = None,
    amp: bool = False,
    optimizer: str = "adam",
    outputs: bool = True,
    history: LbfgsHistory | None = None,
) -> Inversion:
    """Fit W+ (and noise) so that the generated volume matches ``hu`` (and ``label``).

    Args:
        prior: the prior.
        hu: ``[R, R, R]`` HU on the prior's grid (clamped to its window before comparison).
        label: optional ``[R, R, R]`` vertebra mask matched by the label channel.
        steps: Adam steps, or L-BFGS iterations (each at most 1.25 generator passes on average).
        lr: peak learning rate of Adam (units of ``w_std`` for W+; noise units for the maps);
            unused by L-BFGS, whose line search sets the step.
        optimize_noise: also fit the per-layer noise maps (zero otherwise).
        lambda_w, lambda_n: weights of the Gaussian W+ prior and of the noise prior
            (:func:`~xfit.fitting.objective.w_gaussian_prior`, :func:`~xfit.fitting.objective.noise_prior`).
        label_weight: weight of the label BCE against the intensity MSE.
        w_init: optional start ``[num_ws, w_dim]`` (default ``w_mean``).
        resolution: stop the generator at this block and compare with the target average-pooled
            to it (about 4x cheaper per halving; the outputs stay at full resolution).
        amp: bfloat16 autocast of the generator (:func:`xfit.prior.sample.synthesize`).
        optimizer: ``adam`` or ``lbfgs`` (see the module's docstring).
        outputs: also generate the fitted volume and its final loss terms (two generator passes;
            a hybrid start that only continues from W+ skips them).
        history: with ``lbfgs``, the curvature history of an inversion this one continues (its
            :attr:`Inversion.lbfgs_history`, over the same parameters: W+ alone, or W+ and the
            same noise maps); it seeds the first iteration.
    Returns:
        :class:`Inversion`.
    """
    if steps < 1:
        raise InputError(f"steps must be >= 1, got {steps}")
    if optimizer not in INVERSION_OPTIMIZERS:
        raise InputError(f"optimizer must be one of {', '.join(INVERSION_OPTIMIZERS)}, got {optimizer!r}")
    t0 = time.perf_counter()
    G = prior.G
    device = prior.w_mean.device
    unit, lab = check_target(prior, hu, label)
    unit, lab = unit.to(device), None if lab is None else lab.to(device)
    full = int(prior.config.resolution)
    if resolution is not None and resolution != full:
        if resolution < 4 or full % resolution:
            raise InputError(f"resolution must divide the prior's {full} and be >= 4, got {resolution}")
        unit = pool_to(unit, resolution)
        lab = None if lab is None else pool_to(lab, resolution)
    mean, std = prior.w_mean.float(), prior.w_std.float()
    if w_init is None:
        u = torch.zeros(1, G.num_ws, G.w_dim, device=device)
    else:
        u = ((torch.as_tensor(w_init, dtype=torch.float32, device=device) - mean) / std).reshape(1, G.num_ws, G.w_dim)
    u = u.clone().requires_grad_(True)
    noise = [torch.zeros(1, *s[1:], device=device, requires_grad=optimize_noise) for s in G.synthesis.noise_shapes()]
    params = [u] + (noise if optimize_noise else [])
    # W+ alone: the zero maps add nothing, so the generator runs without them (the same numbers,
    # bit for bit, without a noise pass per layer and its gradient)
    fitted_noise = noise if optimize_noise else None
    lo, hi = prior.config.hu_window

    def loss(bf16: bool = amp) -> Tensor:
        return _terms(prior, u, fitted_noise, unit, lab, mean, std, lambda_w, lambda_n, label_weight, resolution, bf16)[
            "total"
        ]

    if optimizer == "lbfgs":
        _, history = _lbfgs(params, loss, steps, (lambda: loss(False)) if amp else None, history=history)
    else:
        _adam(params, loss, steps, lr)
        history = None
    with torch.no_grad():
        w = mean + std * u
        hu_out = prob = None
        terms: dict[str, Tensor] = {}
        if outputs:
            out_hu, logit = generate_hu(prior, w, noise, amp=amp)
            hu_out = out_hu[0].clamp(lo, hi).cpu().numpy().astype(np.float32)
            prob = torch.sigmoid(logit[0]).cpu().numpy().astype(np.float32)
            terms = _terms(
                prior, u, fitted_noise, unit, lab, mean, std, lambda_w, lambda_n, label_weight, resolution, amp
            )
    return Inversion(
        w_plus=w[0].cpu().numpy().astype(np.float32),
        noise=[n[0].detach().cpu().numpy().astype(np.float32) for n in noise],
        hu=hu_out,
        label_prob=prob,
        loss={k: float(v) for k, v in terms.items()},
        seconds=time.perf_counter() - t0,
        lbfgs_history=history,
    )


def _adam(params: list[Tensor], loss, steps: int, lr: float) -> None:
    """``steps`` Adam steps on ``loss()`` with the stylegan2-ada ramp of the learning rate."""
    opt = torch.optim.Adam(params, lr=lr)
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr * lr_schedule((step + 0.5) / steps, 0.05, 0.25)
        opt.zero_grad(set_to_none=True)
        loss().backward()
        opt.step()


def new_lbfgs(params: list[Tensor], iterations: int, evaluations: int) -> torch.optim.LBFGS:
    """L-BFGS over ``params`` with a strong-Wolfe line search: at most ``iterations`` iterations
    and ``evaluations`` loss evaluations, no early stop on small changes (the inversion here and
    the X-ray fit's ``optimizer: lbfgs`` stages share it)."""
    return torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=iterations,
        max_eval=evaluations,
        history_size=LBFGS_HISTORY,
        line_search_fn="strong_wolfe",
        tolerance_grad=0.0,
        tolerance_change=0.0,
    )


def _lbfgs(
    params: list[Tensor],
    loss,
    steps: int,
    fallback=None,
    bridge: int = LBFGS_BRIDGE,
    history: LbfgsHistory | None = None,
) -> tuple[int, LbfgsHistory | None]:
    """``steps`` L-BFGS iterations on ``loss()`` (at most ``1.25 * steps`` evaluations); returns
    the iterations run and the curvature history at the end.

    ``history`` (of an earlier run over the same parameters, such as the inversion at the coarse
    resolution) seeds the first iteration, which is then a quasi-Newton step of the right scale
    rather than a steepest-descent step of unit L1 length; each later run here continues the
    history of the one before it.

    A run can stall: under bf16 autocast the loss is too coarse for the line search at the tiny
    first step L-BFGS takes without a history, which then finds no decrease and stops (step 0)
    long before its budget. On phantom 12 of ``results/heldout20`` the fine inversion stopped after
    one iteration with its loss unchanged, and the fit lost 4.3 dB. Such a stall (neither budget
    used up) runs ``bridge`` iterations on ``fallback`` (the float32 loss), when one is given,
    past the flat start, and then the rest on ``loss()`` again; a second stall runs all that is
    left on ``fallback``. Runs that do not stall are untouched. (Until 2026-12-07 the whole rest
    ran on ``fallback``, about twice as slow per iteration: the README example's inversion took
    29 s instead of 17 s when it stalled; ``docs/speed.md``.)"""
    done, stalled, history = _lbfgs_run(params, loss, steps, history)
    if not stalled or fallback is None:
        return done, history
    more, stalled, history = _lbfgs_run(params, fallback, min(bridge, steps - done), history)
    done += more
    if done < steps and not stalled:
        more, stalled, history = _lbfgs_run(params, loss, steps - done, history)
        done += more
        if stalled and done < steps:
            more, _, history = _lbfgs_run(params, fallback, steps - done, history)
            done += more
    return done, history


def _lbfgs_run(
    params: list[Tensor], loss, steps: int, history: LbfgsHistory | None = None
) -> tuple[int, bool, LbfgsHistory | None]:
    """One L-BFGS run, seeded with ``history`` when given: ``(iterations, stalled, history)``;
    stalled when it stopped before both its iteration and its evaluation budget (a line search
    that found no decrease)."""
    evaluations = steps * 5 // 4 + 1
    opt = new_lbfgs(params, steps, evaluations)
    seeded = _seed(opt, params, history)

    def closure() -> Tensor:
        opt.zero_grad(set_to_none=True)
        total = loss()
        total.backward()
        return total

    opt.step(closure)
    state = opt.state[params[0]]
    n, evals = int(state.get("n_iter", 0)) - int(seeded), int(state.get("func_evals", 0))
    if state.get("old_dirs"):
        history = LbfgsHistory(state["old_stps"], state["old_dirs"], state["ro"], state["H_diag"])
    return n, n < steps and evals < evaluations, history


def _seed(opt: torch.optim.LBFGS, params: list[Tensor], history: LbfgsHistory | None) -> bool:
    """Put ``history`` into a fresh ``opt``'s state so that its first iteration uses it (a zero
    previous step adds no pair); ``False`` (nothing done) without a history or when its
    vectors do not match ``params``."""
    size = sum(p.numel() for p in params)
    if history is None or not history.steps or history.steps[0].numel() != size:
        return False
    flat = history.steps[0]
    opt.state[params[0]].update(
        n_iter=1,  # so that the first iteration here counts as a later one: it takes the history
        d=torch.zeros_like(flat),
        t=0.0,  # ... and its zero step s = d * t adds no curvature pair (y . s = 0)
        prev_flat_grad=torch.zeros_like(flat),
        old_dirs=list(history.grad_changes),
        old_stps=list(history.steps),
        ro=list(history.rho),
        H_diag=history.h_diag,
    )
    return True


def _terms(
    prior: Prior,
    u: Tensor,
    noise: list[Tensor] | None,
    unit: Tensor,
    lab: Tensor | None,
    mean: Tensor,
    std: Tensor,
    lambda_w: float,
    lambda_n: float,
    label_weight: float,
    resolution: int | None = None,
    amp: bool = False,
) -> dict[str, Tensor]:
    """The inversion's loss terms (scalars) for styles ``u`` (``w_std`` units) and noise maps,
    the generator stopped at ``resolution`` (``None``: full), under bf16 autocast with ``amp``;
    ``noise`` ``None``: no noise (zero maps, their prior term 0)."""
    w = mean + std * u
    out = synthesize(prior, w, noise, resolution, amp, noise_mode="none" if noise is None else "const")
    pred = out[:, 0]
    mse = (pred - unit).square().mean()
    bce = F.binary_cross_entropy_with_logits(out[:, 1], lab) if lab is not None else mse.new_zeros(())
    wg = w_gaussian_prior(w, mean, std)[0]
    nz = noise_prior(noise)[0] if noise is not None else mse.new_zeros(())
    total = mse + label_weight * bce + lambda_w * wg + lambda_n * nz
    return {"mse": mse, "bce": bce, "w_gauss": wg, "noise": nz, "total": total}


__all__ = [
    "CEILING_LBFGS_STEPS",
    "CEILING_STEPS",
    "Inversion",
    "LbfgsHistory",
    "check_target",
    "invert_volume",
    "new_lbfgs",
    "pool_to",
]
