"""The baselines' whole-torso training augmentation (``whole_body`` in their configs): the outside
images add up with the crop's to the whole torso's X-ray, the bank is cached, the trainer adds
them with its seeded draws, bad values are refused."""

import numpy as np
import pytest
import torch
from spine_synth import synthetic_crops as _crops
from tiny_models import TINY_ARCH

from xfit.baselines import wholebody
from xfit.baselines.common import BaselineConfig, ViewsConfig, load_config
from xfit.baselines.train import BaselineTrainer
from xfit.errors import InputError
from xfit.io import hu_to_mu
from xfit.phantoms import make_phantom
from xfit.projector import project

#: A tiny cube: 16 voxels of 5 mm, X-rays of 24 x 24 pixels of 4 mm.
CUBE, SPACING, FOV = 16, 5.0, 240.0
VIEWS = ViewsConfig(detector=[24, 24], pixel_spacing_mm=[4.0, 4.0]).views()


def _cfg(whole_body: dict | None = None, **extra) -> BaselineConfig:
    d = {
        "method": "x2ct-cnn",
        "resolution": CUBE,
        "spacing_mm": SPACING,
        "arch": TINY_ARCH["x2ct-cnn"],
        "views": {"detector": [24, 24], "pixel_spacing_mm": [4.0, 4.0]},
        "training": {"batch_size": 2, "steps": 4, "lr": 1e-3, "seed": 0},
        **extra,
    }
    if whole_body is not None:
        d["whole_body"] = {"fov_mm": FOV, "count": 2, **whole_body}
    return BaselineConfig.from_dict(d)


def _mu(hu: np.ndarray) -> torch.Tensor:
    return hu_to_mu(torch.from_numpy(np.ascontiguousarray(hu, dtype=np.float32)))[None, None]


def test_crop_plus_outside_is_the_whole_torso():
    seed = 7
    shape = wholebody.torso_shape(CUBE, SPACING, FOV, VIEWS)
    assert shape[0] == shape[1] == 48 and CUBE <= shape[2] <= 48 and all(n % 2 == CUBE % 2 for n in shape)
    torso = make_phantom(seed, size=shape, spacing_mm=SPACING, body_composition="published")
    crop = make_phantom(seed, size=CUBE, spacing_mm=SPACING, body_composition="published")
    lo = [(n - CUBE) // 2 for n in shape]
    centre = torso.hu[lo[0] : lo[0] + CUBE, lo[1] : lo[1] + CUBE, lo[2] : lo[2] + CUBE]
    assert np.abs(centre - crop.hu).max() < 0.5  # HU: the same anatomy (blur and noise in float32)
    with torch.no_grad():
        whole = project(_mu(torso.hu), torso.affine, VIEWS)[0].numpy()
        inside = project(_mu(crop.hu), crop.affine, VIEWS)[0].numpy()
    outside = wholebody.outside_images(seed, CUBE, SPACING, FOV, VIEWS)
    assert outside.shape == (2, 24, 24)
    assert np.abs(inside + outside - whole).max() < 2e-3 * whole.max()  # the projector's sampling
    assert float(outside.mean()) > float(inside.mean())  # the torso outweighs the crop


def test_bank_is_cached_and_a_damaged_cache_made_again(tmp_path, monkeypatch):
    bank = wholebody.outside_bank(CUBE, SPACING, FOV, 3, 2, VIEWS, cache_dir=tmp_path)
    assert bank.shape == (2, 2, 24, 24) and bool(torch.isfinite(bank).all())
    (cached,) = tmp_path.iterdir()
    calls = []
    real = wholebody.outside_images
    monkeypatch.setattr(wholebody, "outside_images", lambda *a: calls.append(a) or real(*a))
    assert torch.equal(wholebody.outside_bank(CUBE, SPACING, FOV, 3, 2, VIEWS, cache_dir=tmp_path), bank)
    assert not calls  # read, not drawn again
    other = wholebody.outside_bank(CUBE, SPACING, FOV, 4, 2, VIEWS, cache_dir=tmp_path)
    assert len(calls) == 2 and not torch.equal(other, bank)  # other seeds: another file
    cached.write_bytes(cached.read_bytes()[:100])
    assert torch.equal(wholebody.outside_bank(CUBE, SPACING, FOV, 3, 2, VIEWS, cache_dir=tmp_path), bank)
    assert len(calls) == 4


def test_trainer_adds_a_torso_with_its_probability(tmp_path):
    crops = _crops(2)
    off = BaselineTrainer(_cfg())
    state = off.gen.get_state()
    off.make_inputs(crops)
    assert torch.equal(off.gen.get_state(), state)  # off: no draw, old runs resume bit for bit
    tr = BaselineTrainer(_cfg({"probability": 1.0}), cache_dir=tmp_path)
    ideal = torch.rand(2, 2, 24, 24)
    added = tr.with_outside(ideal) - ideal
    bank = tr.outside_bank()
    for b in range(2):
        assert any(torch.allclose(added[b], bank[j], atol=1e-5) for j in range(len(bank)))
    none = BaselineTrainer(_cfg({"probability": 0.0}))
    assert torch.equal(none.make_inputs(crops)[0], off.make_inputs(crops)[0])
    logs = BaselineTrainer(_cfg({"probability": 0.5}), cache_dir=tmp_path).train_step(crops)
    assert all(np.isfinite(v) for v in logs.values())
    again = BaselineTrainer(_cfg({"probability": 0.5}), cache_dir=tmp_path).train_step(crops)
    assert again["loss_recon"] == logs["loss_recon"]  # seeded


def test_off_by_default_and_bad_values_refused():
    for name in ("x2ct-cnn", "x2ct-gan", "ear", "transvert", "xctrsnet", "igcn"):
        assert load_config(name).whole_body.probability == 0.0
    cfg = _cfg({"probability": 0.5})
    assert BaselineConfig.from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()
    for bad in (
        {"probability": 1.5},
        {"probability": True},
        {"fov_mm": 60.0},  # not wider than the 80 mm cube
        {"fov_mm": float("inf")},
        {"count": 0},
        {"seed": -1},
        {"torso": 1},
    ):
        with pytest.raises(InputError, match="whole_body"):
            _cfg(bad)
