"""Tiny configs shared by several test modules: the part-1 baselines at 16³ and 5 mm on 24 x 24
detectors, and the tiny prior config set up for short training runs."""

from __future__ import annotations

from pathlib import Path

import yaml

from xfit.baselines.common import BaselineConfig
from xfit.prior.config import PriorConfig, load_config

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
    return BaselineConfig.from_dict({
        "method": method, "resolution": 16, "spacing_mm": 5.0, "arch": TINY_ARCH[method],
        "views": {"detector": [24, 24], "pixel_spacing_mm": [4.0, 4.0]}, "training": t})


def baseline_yaml(tmp_path: Path, **training) -> Path:
    """The tiny x2ct-cnn config (a checkpoint every 2 steps) as a YAML file."""
    path = tmp_path / "baseline.yaml"
    path.write_text(yaml.safe_dump(tiny_baseline("x2ct-cnn", **training).to_dict()))
    return path


def tiny_prior_training() -> PriorConfig:
    """The tiny prior config, a checkpoint every 2 steps, logs every step, no samples."""
    data = load_config("tiny").to_dict()
    data["training"].update(checkpoint_every=2, sample_every=1000, log_every=1)
    return PriorConfig.from_dict(data)
