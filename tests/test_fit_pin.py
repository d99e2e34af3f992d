"""The default fit path pinned to numbers recorded before issue 30's restructuring.

``xfit.reconstruct.reconstruct_vertebrae`` on the example X-rays (``examples/ap.png``,
``lat.png``) with the default fit config, shortened (4 steps, 2 restarts, 4 inversion steps), amp
off, the reference projector, seed 0 and one torch thread: once with a tiny random prior (32³,
the shipped network is off its grid, so the fit starts at ``w_mean``) and once with the shipped
prior and network (the fit starts from X-CTRSNet's volume inverted into W+; metrics against the
example CT). The recorded numbers were produced by the code before the refactor; any change of
the fit's arithmetic or of its default path moves them far beyond the tolerance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xfit.reconstruct import ReconstructSettings, reconstruct_vertebrae

pytestmark = pytest.mark.usefixtures("one_thread")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# the start network is the plain X-CTRSNet (the default until the style-tuned one, 2026-12-05), so
# the pin keeps pinning the same arithmetic
CONFIG = "steps: 4\nrestarts: 2\namp: off\ninit_network: xctrsnet\ninit_network_steps: 4\nearly_stop_tol: 0.0\n"

TINY = {
    "init": "w_mean (the shipped xctrsnet is not on the prior's grid)",
    "hu_mean": 1171.9209053525701,
    "hu_std": 439.99648888032783,
    "hu_min": -1000.0,
    "hu_max": 1500.0,
    "label_prob_sum": 22339.5458342731,
    "label_voxels": 31123,
    "uncertainty_mean": 201.17546027264365,
    "view_ncc": [0.45390692353248596, 0.21219675242900848],
    "best_restart": 1,
    # hu[c, c-4:c+4:2, c-4:c+4:2] and label_prob[c, c-4:c+4:2, c-4:c+4:2], c = 16
    "hu_slice": [
        [775.4089, 927.3892, 1311.4229, 1500.0],
        [858.2079, 1136.2903, 1500.0, 1500.0],
        [1151.4978, 1500.0, 1500.0, 1500.0],
        [1346.3525, 1500.0, 1500.0, 1500.0],
    ],
    "prob_slice": [
        [0.575801, 0.517776, 0.498866, 0.541282],
        [0.586, 0.574389, 0.585866, 0.647974],
        [0.57818, 0.60419, 0.613248, 0.667198],
        [0.525671, 0.528244, 0.56225, 0.587255],
    ],
}

SHIPPED = {
    "init": "xctrsnet volume inverted into W+ (4 steps)",
    "hu_mean": -35.32473822752945,
    "hu_std": 127.63115155685136,
    "hu_min": -451.80145263671875,
    "hu_max": 594.1446533203125,
    "label_prob_sum": 16222.318942128102,
    "label_voxels": 16138,
    "view_ncc": [0.8490874767303467, 0.8002350330352783],
    "best_restart": 0,
    "metrics": {
        "psnr_db": 24.579622445989546,
        "ssim": 0.26903265350320793,
        "mae_hu": 103.15443953052329,
        "mae_mask_hu": 143.0171236347447,
        "dice": 0.7956670320459088,
        "hd95_mm": 3.75,
    },
    # c = 32
    "hu_slice": [
        [-116.1363, -132.7732, -130.5718, -117.6125],
        [35.0411, 16.8069, 62.2803, 167.8765],
        [172.0247, 211.4694, 222.7557, 121.0101],
        [26.4812, 110.1477, 97.0808, 9.7116],
    ],
    "prob_slice": [
        [0.0, 0.0, 0.0, 0.0],
        [2.2e-05, 4e-06, 0.000182, 0.206282],
        [0.999995, 0.99999, 0.999998, 0.999995],
        [0.999998, 0.999999, 0.999998, 0.999992],
    ],
}


@pytest.fixture
def fit_config(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("XFIT_PROJECTOR", "reference")
    path = tmp_path / "fit.yaml"
    path.write_text(CONFIG)
    return path


def check(rec, want: dict) -> None:
    f = rec.fit
    hu = f.hu.astype(np.float64)
    c = f.hu.shape[0] // 2
    assert rec.settings["init"] == want["init"]
    assert f.best_restart == want["best_restart"]
    assert int(f.labels.sum()) == want["label_voxels"]
    got = [hu.mean(), hu.std(), hu.min(), hu.max(), f.label_prob.astype(np.float64).sum()]
    np.testing.assert_allclose(
        got, [want[k] for k in ("hu_mean", "hu_std", "hu_min", "hu_max", "label_prob_sum")], rtol=1e-5
    )
    np.testing.assert_allclose(f.view_ncc, want["view_ncc"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(hu[c, c - 4 : c + 4 : 2, c - 4 : c + 4 : 2], want["hu_slice"], rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(f.label_prob[c, c - 4 : c + 4 : 2, c - 4 : c + 4 : 2], want["prob_slice"], atol=1e-5)


def test_default_fit_with_a_tiny_prior_is_pinned(tmp_path, fit_config, tiny_prior_file):
    """Through a :class:`ReconstructSettings` (the shipped case below goes through keywords)."""
    prior = tiny_prior_file(n=200)
    settings = ReconstructSettings(prior=prior, config=fit_config, seed=0, progress=False)
    rec = reconstruct_vertebrae([EXAMPLES / "ap.png", EXAMPLES / "lat.png"], settings)[0]
    check(rec, TINY)
    np.testing.assert_allclose(
        float(rec.fit.uncertainty.astype(np.float64).mean()), TINY["uncertainty_mean"], rtol=1e-5
    )


def test_default_fit_with_the_shipped_prior_and_network_is_pinned(fit_config):
    rec = reconstruct_vertebrae(
        [EXAMPLES / "ap.png", EXAMPLES / "lat.png"],
        config=fit_config,
        seed=0,
        gt=EXAMPLES / "ct.nii.gz",
        progress=False,
    )[0]
    check(rec, SHIPPED)
    for k, v in SHIPPED["metrics"].items():
        np.testing.assert_allclose(rec.metrics[k], v, rtol=1e-5, err_msg=k)


def test_settings_are_given_one_way():
    images = [EXAMPLES / "ap.png", EXAMPLES / "lat.png"]
    with pytest.raises(TypeError, match="not both"):
        reconstruct_vertebrae(images, ReconstructSettings(), steps=3)
    with pytest.raises(TypeError, match="stepz"):
        reconstruct_vertebrae(images, stepz=3)
    assert ReconstructSettings().fit_overrides() == {}
    assert ReconstructSettings(steps=3, transform=False).fit_overrides() == {"steps": 3, "transform": False}
