"""The fit's optimisers, without the import that ``torch.optim`` makes on first use.

``torch.optim.Optimizer`` wraps ``add_param_group``, ``zero_grad`` and every ``Adam.step`` in
``torch._disable_dynamo``, which imports ``torch._dynamo`` the first time one runs: 1.3-1.8 s
of a 2-core CPU in each process (``python bench/startup_costs.py``), for a fit that never
compiles. The two here do the same arithmetic, in the same order, without it:

- :class:`Adam`: ``torch.optim.Adam``'s single-tensor update (the one it takes for CPU
  tensors) with its defaults (no weight decay, no AMSGrad), so every step is bit for bit
  ``torch.optim.Adam``'s on the CPU; parameter groups, per-group learning rates and per-parameter
  state as there (the fit sets ``group["lr"]`` each step and drops a restart's state on
  divergence);
- :class:`LBFGS`: ``torch.optim.LBFGS`` itself (its step and strong-Wolfe line search), with
  plain ``add_param_group`` and ``zero_grad``.

``tests/fitting/test_optim.py`` holds them to ``torch.optim``'s results and checks that a fit
imports no ``torch._dynamo``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor


def _groups(params: Iterable[Tensor] | Iterable[dict[str, Any]], defaults: dict[str, Any]) -> list[dict[str, Any]]:
    """Parameter groups as ``torch.optim`` builds them: dicts with ``params`` (a list) and every
    default the group does not set."""
    given = list(params)
    if not given:
        raise ValueError("optimizer got an empty parameter list")
    if not isinstance(given[0], dict):
        given = [{"params": given}]
    groups = []
    for g in given:
        group = dict(g)
        p = group["params"]
        group["params"] = [p] if isinstance(p, Tensor) else list(p)
        for k, v in defaults.items():
            group.setdefault(k, v)
        groups.append(group)
    return groups


class Adam:
    """Adam (Kingma and Ba, 2015) with bias correction, as ``torch.optim.Adam(params, lr,
    betas, eps)`` on CPU tensors, step for step and bit for bit.

    Args:
        params: tensors, or groups (dicts with ``params`` and any of ``lr``, ``betas``, ``eps``
            and extra keys, which are kept).
        lr, betas, eps: the defaults of every group.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.defaults = {"lr": lr, "betas": betas, "eps": eps}
        self.param_groups = _groups(params, self.defaults)
        self.state: defaultdict[Tensor, dict[str, Any]] = defaultdict(dict)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop (or zero) every parameter's gradient."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.detach_().zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient (state made on its first one)."""
        for group in self.param_groups:
            lr, (beta1, beta2), eps = float(group["lr"]), group["betas"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    # the step count lives in a float32 tensor, as torch's does: its value after
                    # ``+= 1`` is what the bias corrections see
                    state["step"] = torch.tensor(0.0, dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                grad, exp_avg, exp_avg_sq = p.grad, state["exp_avg"], state["exp_avg_sq"]
                state["step"] += 1
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                step = state["step"].item()
                bias_correction1 = 1 - beta1**step
                bias_correction2 = 1 - beta2**step
                step_size = lr / bias_correction1
                denom = (exp_avg_sq.sqrt() / bias_correction2**0.5).add_(eps)
                p.addcdiv_(exp_avg, denom, value=-step_size)


class LBFGS(torch.optim.LBFGS):
    """``torch.optim.LBFGS`` (same arguments, state and steps) whose parameter groups and
    ``zero_grad`` do not import ``torch._dynamo``."""

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group (``torch.optim.Optimizer.add_param_group`` without its checks)."""
        self.param_groups.extend(_groups([param_group], self.defaults))

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop (or zero) every parameter's gradient."""
        for p in self._params if hasattr(self, "_params") else []:
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.detach_().zero_()
