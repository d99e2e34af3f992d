"""The tiny models the tests build on: the tiny prior (32³ at 2.5 mm, randomly initialised; the
fixtures ``tiny_prior`` and ``tiny_prior_file`` of tests/conftest.py hold it), the part-1 baselines
at 16³ and 5 mm on 24 x 24 detectors, and the tiny prior config set up for short training runs."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from xfit.baselines.common import BaselineConfig
from xfit.prior.checkpoint import compute_w_stats, save_prior
from xfit.prior.config import PriorConfig, load_config
from xfit.prior.networks import Generator, build_generator


def tiny_generator(torch_seed: int = 0, noise_strength: float = 0.0) -> Generator:
    """The tiny prior's generator, in eval mode, initialised right after ``torch.manual_seed(torch_seed)``
    (so torch's global generator is left where building it leaves it); every layer's noise strength
    set to ``noise_strength`` (0: as initialised)."""
    torch.manual_seed(torch_seed)
    G = build_generator(load_config("tiny")).eval()
    if noise_strength:
        with torch.no_grad():
            for layer in G.synthesis.layers:
                layer.noise_strength.fill_(noise_strength)
    return G


def save_tiny_prior(path: Path, *, torch_seed: int = 0, n: int = 200, noise_strength: float = 0.0) -> Path:
    """An untrained prior of the tiny config (:func:`tiny_generator`) saved at ``path``, its w statistics
    from ``n`` samples (seed 0). Tests take it from the ``tiny_prior_file`` fixture, which writes each
    one once per session."""
    G = tiny_generator(torch_seed, noise_strength)
    cfg = load_config("tiny")
    save_prior(path, G, *compute_w_stats(G, n=n, seed=0), cfg, {"note": "random init, for tests"}, cfg.label_names)
    return path


TINY_ARCH = {
    "x2ct-cnn": {"enc": [4, 8, 8], "dec": [4, 8, 8], "fc_hidden": 16},
    "x2ct-gan": {"enc": [4, 8, 8], "dec": [4, 8, 8], "fc_hidden": 16, "disc": [4, 8]},
    "ear": {"stem": 4, "enc": [4, 8, 8]},
}


def tiny_baseline(method: str, **training) -> BaselineConfig:
    """A part-1 baseline (``x2ct-cnn``, ``x2ct-gan``, ``ear``) at 16³ and 5 mm, 24 x 24 px detectors,
    4 steps of batch 2 with a checkpoint every 2; ``training`` overrides the training keys."""
    t = {"batch_size": 2, "steps": 4, "lr": 1e-3, "checkpoint_every": 2, "log_every": 1, "seed": 0, **training}
    if method == "ear":
        t.setdefault("betas", [0.9, 0.999])
    return BaselineConfig.from_dict(
        {
            "method": method,
            "resolution": 16,
            "spacing_mm": 5.0,
            "arch": TINY_ARCH[method],
            "views": {"detector": [24, 24], "pixel_spacing_mm": [4.0, 4.0]},
            "training": t,
        }
    )


def untrained_x2ct_checkpoint(path: Path) -> Path:
    """An untrained tiny X2CT-CNN (16³ at 5 mm, two 32 x 32 px views of 3 mm) saved at ``path``,
    its weights drawn right after ``torch.manual_seed(0)``: the baseline of the study tests."""
    from xfit.baselines.common import save_model
    from xfit.baselines.registry import build_model

    cfg = BaselineConfig.from_dict(
        {
            "method": "x2ct-cnn",
            "resolution": 16,
            "spacing_mm": 5.0,
            "arch": TINY_ARCH["x2ct-cnn"],
            "views": {"detector": [32, 32], "pixel_spacing_mm": [3.0, 3.0]},
        }
    )
    torch.manual_seed(0)
    return save_model(path, build_model(cfg).eval(), cfg, {"steps": 0})


def baseline_yaml(tmp_path: Path, **training) -> Path:
    """The tiny x2ct-cnn config (a checkpoint every 2 steps) as a YAML file."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "baseline.yaml"
    path.write_text(yaml.safe_dump(tiny_baseline("x2ct-cnn", **training).to_dict()))
    return path


def tiny_prior_training() -> PriorConfig:
    """The tiny prior config, a checkpoint every 2 steps, logs every step, no samples."""
    data = load_config("tiny").to_dict()
    data["training"].update(checkpoint_every=2, sample_every=1000, log_every=1)
    return PriorConfig.from_dict(data)
