"""Test-time fitting of the 3D prior to X-rays: objective terms and the optimizer.

``fit(prior, images, views, cfg) -> FitResult`` (see :mod:`xfit.fitting.optimize`); settings in
:class:`FitConfig` (``xfit/configs/fit.yaml``); loss terms in :mod:`xfit.fitting.objective`.
"""

from .config import FitConfig, fit_config_from_dict, load_fit_config
from .objective import (
    Objective,
    PerceptualLoss,
    ViewGroup,
    background_penalty,
    gradient_ncc_loss,
    group_views,
    monotone_map,
    multiscale_ncc_loss,
    ncc_loss,
    ncc_per_view,
    noise_prior,
    pose_prior,
    saturation_mask,
    w_cosine_prior,
    w_gaussian_prior,
)
from .optimize import FitResult, best_prior_samples, check_images, check_views, fit, half_resolution, lr_schedule

__all__ = [
    "FitConfig",
    "FitResult",
    "Objective",
    "PerceptualLoss",
    "ViewGroup",
    "background_penalty",
    "best_prior_samples",
    "check_images",
    "check_views",
    "fit",
    "fit_config_from_dict",
    "gradient_ncc_loss",
    "group_views",
    "half_resolution",
    "load_fit_config",
    "lr_schedule",
    "monotone_map",
    "multiscale_ncc_loss",
    "ncc_loss",
    "ncc_per_view",
    "noise_prior",
    "pose_prior",
    "saturation_mask",
    "w_cosine_prior",
    "w_gaussian_prior",
]
