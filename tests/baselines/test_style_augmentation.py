"""The baselines' clinical-style training augmentation (``style`` in their configs, issue 28):
off by default, one training step runs with it, its draws are seeded, bad values are refused."""

import numpy as np
import pytest
import torch
from spine_synth import synthetic_crops as _crops
from tiny_models import TINY_ARCH

from xfit.baselines.common import BaselineConfig, load_config
from xfit.baselines.train import BaselineTrainer
from xfit.errors import InputError


def _cfg(method: str, style: dict | None = None) -> BaselineConfig:
    d = {
        "method": method,
        "resolution": 16,
        "spacing_mm": 5.0,
        "arch": TINY_ARCH[method],
        "views": {"detector": [24, 24], "pixel_spacing_mm": [4.0, 4.0]},
        "training": {"batch_size": 2, "steps": 4, "lr": 1e-3, "seed": 0},
    }
    if style is not None:
        d["style"] = style
    return BaselineConfig.from_dict(d)


def test_style_is_off_by_default_and_in_no_shipped_config():
    for name in ("x2ct-cnn", "x2ct-gan", "ear", "transvert", "xctrsnet", "igcn"):
        assert load_config(name).style.probability == 0.0
    cfg = _cfg("x2ct-cnn")
    tr = BaselineTrainer(cfg)
    state = tr.gen.get_state()
    _x, _, _, _ = tr.make_inputs(_crops(2))
    assert torch.equal(tr.gen.get_state(), state)  # no draw when off: old runs resume bit for bit
    assert BaselineConfig.from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()


def test_one_training_step_with_clinical_style():
    cfg = _cfg("x2ct-cnn", {"probability": 1.0, "min_strength": 0.5, "max_strength": 1.0})
    tr = BaselineTrainer(cfg)
    crops = _crops(2)
    views = tr.draw_views(2)
    from xfit.io import hu_to_mu
    from xfit.prior.config import unit_to_hu
    from xfit.projector import project

    mu = hu_to_mu(unit_to_hu(crops[:, :1].float(), tuple(cfg.hu_window)))
    with torch.no_grad():
        ideal = torch.cat([project(mu[b : b + 1], tr.affine, views[b]) for b in range(2)])
    styled = tr.styled(ideal, views)
    assert styled.shape == ideal.shape and float(styled.min()) >= 0.0 and float(styled.max()) <= 1.0
    for b in range(2):
        for v in range(2):
            r = np.corrcoef(styled[b, v].flatten().numpy(), ideal[b, v].flatten().numpy())[0, 1]
            assert r < 0.999  # processed, not an affine map of the line integrals
    logs = BaselineTrainer(cfg).train_step(crops)
    assert all(np.isfinite(v) for v in logs.values())
    assert BaselineTrainer(cfg).train_step(crops)["loss_recon"] == logs["loss_recon"]  # seeded
    plain = BaselineTrainer(_cfg("x2ct-cnn")).train_step(crops)
    assert plain["loss_recon"] != logs["loss_recon"]  # the augmentation changed what the network saw


def test_bad_style_configs():
    for bad in (
        {"probability": 1.5},
        {"probability": True},
        {"min_strength": 0.8, "max_strength": 0.2},
        {"strength": 1.0},
        {"max_strength": float("nan")},
    ):
        with pytest.raises(InputError, match="style"):
            _cfg("x2ct-cnn", bad)
    tiny = {
        "method": "x2ct-cnn",
        "resolution": 16,
        "spacing_mm": 5.0,
        "arch": TINY_ARCH["x2ct-cnn"],
        "views": {"detector": [8, 8], "pixel_spacing_mm": [1.0, 1.0]},
        "style": {"probability": 0.5},
    }
    with pytest.raises(InputError):  # the presets' marker does not fit an 8 mm detector
        BaselineConfig.from_dict(tiny)
