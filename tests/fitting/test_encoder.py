"""Tests of the warm-start encoder (xfit.fitting.encoder): tiny random prior, 32^2 detectors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xfit.errors import CheckpointError, GeometryError, InputError, OutputExistsError
from xfit.fitting.encoder import (
    Encoder,
    augment_images,
    evaluate_encoder,
    load_encoder,
    match_views,
    predict_w_plus,
    preprocess_images,
    resample_view,
    save_encoder,
    simulate_samples,
    train_encoder,
    warm_start_w_plus,
)
from xfit.geometry import View
from xfit.prior.checkpoint import load_prior

DET, PS = (32, 32), (3.5, 3.5)


def _views(angles=(0.0, 90.0)) -> list[View]:
    return [View(a, shape=DET, pixel_spacing_mm=PS) for a in angles]


@pytest.fixture(scope="module")
def prior(tiny_prior_file):
    return load_prior(tiny_prior_file(n=2000))


@pytest.fixture(scope="module")
def other_prior(tiny_prior_file):
    return load_prior(tiny_prior_file(torch_seed=1, n=200))


@pytest.fixture(scope="module")
def trained(prior):
    torch.set_num_threads(1)
    return train_encoder(
        prior,
        _views(),
        n_steps=300,
        batch=32,
        lr=2e-3,
        image_size=32,
        bank=256,
        channels=(16, 32, 64),
        hidden=128,
        weight_decay=1e-2,
        seed=0,
    )


@pytest.fixture(scope="module")
def sample_images(prior):
    """Two held-out samples: (images [2, V, R, C], w_plus [2, num_ws, w_dim])."""
    gen = torch.Generator().manual_seed(999)
    w = prior.G.mapping(torch.randn(2, prior.G.z_dim, generator=gen))
    return simulate_samples(prior, _views(), w, gen), w


# ----------------------------------------------------------------------------- network


@pytest.mark.parametrize("mode", ["w", "wplus"])
@pytest.mark.parametrize("batch", [1, 3])
def test_encoder_shapes_and_zero_init(mode, batch):
    num_ws, w_dim = 8, 64
    mean, std = torch.randn(w_dim), torch.rand(w_dim) + 0.5
    enc = Encoder(2, 32, num_ws, w_dim, mode=mode, channels=(8, 16), hidden=32, w_mean=mean, w_std=std)
    u = enc(torch.randn(batch, 2, 32, 32))
    assert u.shape == (batch, num_ws, w_dim)
    # last layer starts at zero: the untrained encoder predicts w_mean
    assert torch.allclose(enc.to_w_plus(u), mean.expand(batch, num_ws, w_dim))
    with torch.no_grad():
        enc.head[-1].bias.normal_()
    u = enc(torch.randn(batch, 2, 32, 32))
    if mode == "w":
        assert torch.equal(u[:, 0], u[:, -1])
    else:
        assert not torch.equal(u[:, 0], u[:, -1])


def test_encoder_rejects_bad_args():
    with pytest.raises(InputError):
        Encoder(2, 32, 8, 64, mode="z")
    enc = Encoder(2, 32, 8, 64, channels=(8,), hidden=16)
    with pytest.raises(InputError):
        enc(torch.randn(1, 3, 32, 32))


# ----------------------------------------------------------------------------- preprocessing


def test_resample_view_positions():
    """A detector image equal to its column index resamples to the expected columns."""
    view = View(0.0, shape=(40, 50), pixel_spacing_mm=(2.0, 2.0), offset_px=(0.0, 1.5))
    s, window = 16, 60.0
    cols = torch.arange(50, dtype=torch.float32).expand(40, 50)
    rows = torch.arange(40, dtype=torch.float32)[:, None].expand(40, 50)
    out_c = resample_view(cols[None], view, s, window)[0]
    out_r = resample_view(rows[None], view, s, window)[0]
    half = 0.5 * window * view.magnification
    pos = (torch.arange(s) + 0.5) * (2 * half / s) - half
    exp_c = pos / 2.0 + (50 - 1) / 2 - 1.5
    exp_r = pos / 2.0 + (40 - 1) / 2
    assert torch.allclose(out_c, exp_c[None].expand(s, s), atol=1e-3)
    assert torch.allclose(out_r, exp_r[:, None].expand(s, s), atol=1e-3)


def test_resample_view_rejects_wrong_shape():
    with pytest.raises(InputError):
        resample_view(torch.zeros(1, 10, 10), View(0.0, shape=(12, 10)), 16, 50.0)


def test_preprocess_gain_offset_invariance_and_normalisation():
    gen = torch.Generator().manual_seed(0)
    imgs = torch.rand(2, 2, *DET, generator=gen)
    x = preprocess_images(imgs, _views(), 32, 88.0)
    assert x.shape == (2, 2, 32, 32)
    assert torch.allclose(x.mean((-2, -1)), torch.zeros(2, 2), atol=1e-5)
    assert torch.allclose(x.std((-2, -1)), torch.ones(2, 2), atol=1e-4)
    y = preprocess_images(imgs * torch.tensor([3.7, 0.2])[None, :, None, None] - 5.0, _views(), 32, 88.0)
    assert torch.allclose(x, y, atol=1e-4)
    with pytest.raises(InputError):
        preprocess_images([imgs[0, 0]], _views(), 32, 88.0)
    with pytest.raises(InputError):
        preprocess_images([imgs[0, 0], imgs[0, 1] * float("nan")], _views(), 32, 88.0)


def test_augment_changes_gain_offset_but_keeps_shape():
    gen = torch.Generator().manual_seed(0)
    imgs = torch.rand(4, 2, 8, 8, generator=gen) + 1
    aug = augment_images(imgs, gen)
    assert aug.shape == imgs.shape
    assert not torch.allclose(aug.mean((-2, -1)), imgs.mean((-2, -1)), atol=1e-2)


# ----------------------------------------------------------------------------- training


def test_training_reduces_loss_and_beats_w_mean(trained, prior):
    info = trained.meta["training"]
    assert info["loss_last"] < 0.5 * info["loss_first"]
    res = evaluate_encoder(trained, prior, _views(), n=48, seed=4321)
    assert res["mse_encoder"] < 0.92 * res["mse_mean"], res


def test_predict_invariant_to_gain_offset(trained, sample_images, prior):
    imgs, _ = sample_images
    a = predict_w_plus(trained, [imgs[0, 0], imgs[0, 1]], _views())
    b = predict_w_plus(trained, [imgs[0, 0].numpy() * 250.0 + 17.0, imgs[0, 1] * 0.01 - 3.0], _views())
    assert a.shape == (prior.num_ws, prior.config.w_dim)
    assert torch.allclose(a, b, atol=1e-3 * float(prior.w_std.mean()))
    other = predict_w_plus(trained, [imgs[1, 0], imgs[1, 1]], _views())
    assert not torch.allclose(a, other, atol=1e-3)  # depends on the images


def test_predict_view_family(trained, sample_images):
    imgs, _ = sample_images
    ap, lat = imgs[0, 0], imgs[0, 1]
    ref = predict_w_plus(trained, [ap, lat], _views())
    # swapped order is paired by angle
    swapped = predict_w_plus(trained, [lat, ap], _views((90.0, 0.0)))
    assert torch.allclose(ref, swapped, atol=1e-5)
    assert match_views(trained, _views((2.0, 88.0)))[0] == [0, 1]
    assert match_views(trained, _views((-358.0, 450.0)))[0] == [0, 1]  # angles mod 360
    with pytest.raises(GeometryError, match="differ"):
        predict_w_plus(trained, [ap, lat], _views((0.0, 60.0)))
    assert predict_w_plus(trained, [ap, lat], _views((30.0, 90.0)), strict=False) is None
    with pytest.raises(GeometryError):
        predict_w_plus(trained, [ap], _views((0.0,)))
    parallel = [v.with_(projection="parallel") for v in _views()]
    assert match_views(trained, parallel)[0] is None


# ----------------------------------------------------------------------------- checkpoint


def test_save_load_round_trip(tmp_path, trained, prior, sample_images):
    imgs, _ = sample_images
    path = save_encoder(tmp_path / "enc.safetensors", trained, {"note": "test"})
    enc = load_encoder(path, prior)
    assert enc.meta["note"] == "test"
    assert enc.meta["views"]["angles_deg"] == [0.0, 90.0]
    assert enc.meta["prior_sha256"] == prior.sha256
    a = predict_w_plus(trained, [imgs[0, 0], imgs[0, 1]], _views())
    b = predict_w_plus(enc, [imgs[0, 0], imgs[0, 1]], _views())
    assert torch.equal(a, b)
    with pytest.raises(OutputExistsError):
        save_encoder(path, trained)
    save_encoder(path, trained, force=True)
    assert not list(tmp_path.glob(".*.tmp"))


def test_load_refuses_mismatch(tmp_path, trained, prior, other_prior):
    path = save_encoder(tmp_path / "enc.safetensors", trained)
    with pytest.raises(CheckpointError, match="trained for prior"):
        load_encoder(path, other_prior)
    load_encoder(path)  # without a prior: no check
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(CheckpointError):
        load_encoder(junk)
    with pytest.raises(CheckpointError, match="xfit-encoder"):
        load_encoder(prior.path)  # a prior is not an encoder
    with pytest.raises(CheckpointError):
        load_encoder(tmp_path / "missing.safetensors")
    bare = Encoder(2, 32, 8, 64)
    with pytest.raises(InputError):
        save_encoder(tmp_path / "bare.safetensors", bare)  # no view family / prior


def test_warm_start_w_plus(tmp_path, trained, prior, other_prior, sample_images):
    imgs, _ = sample_images
    images = [imgs[0, 0], imgs[0, 1]]
    w, note = warm_start_w_plus(prior, images, _views())  # no encoder beside the prior file
    assert w is None and "no encoder" in note
    w, note = warm_start_w_plus(prior, images, _views(), trained)
    assert note == "encoder" and torch.equal(w, predict_w_plus(trained, images, _views()))
    w, note = warm_start_w_plus(prior, images, _views((0.0, 45.0)), trained)
    assert w is None and "differ" in note
    with pytest.raises(CheckpointError):
        warm_start_w_plus(other_prior, images, _views(), trained)
