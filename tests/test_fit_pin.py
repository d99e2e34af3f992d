"""The default fit path pinned to recorded numbers (the shipped case re-recorded 2026-12-05 late
evening, when the inversion of the start network's volume became L-BFGS of W+ alone; before that when the warm
schedule and the full-resolution inversion became the default and the W+/noise priors were
restricted to the inputs each stage's generator reads; first recorded before issue 30's restructuring).

``xfit.reconstruct.reconstruct_vertebrae`` on the example X-rays (``examples/ap.png``,
``lat.png``) with the default fit config, shortened (4 steps cold and warm, 2 restarts, 4 + 4 inversion steps), amp
off, the reference projector, seed 0 and one torch thread: once with a tiny random prior (32³,
the shipped network is off its grid, so the fit starts at ``w_mean``) and once with the shipped
prior and network (the fit starts from X-CTRSNet's volume inverted into W+; metrics against the
example CT). The recorded numbers were produced by the code when they were recorded; any change of
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
CONFIG = (
    "steps: 4\nwarm_steps: 4\nrestarts: 2\namp: off\ninit_network: xctrsnet\ninit_network_steps: 4\n"
    "init_network_fine_steps: 4\nearly_stop_tol: 0.0\n"
)

TINY = {
    "init": "w_mean (the shipped xctrsnet is not on the prior's grid)",
    "hu_mean": 1146.139788622968,
    "hu_std": 459.8394652414512,
    "hu_min": -1000.0,
    "hu_max": 1500.0,
    "label_prob_sum": 21367.474456757307,
    "label_voxels": 30167,
    "view_ncc": [0.4654458463191986, 0.22065438330173492],
    "best_restart": 1,
    "uncertainty_mean": 213.60790732600572,
    # hu[c, c-4:c+4:2, c-4:c+4:2] and label_prob[c, c-4:c+4:2, c-4:c+4:2], c = 16
    "hu_slice": [
        [785.0118408203125, 938.772705078125, 1312.710205078125, 1500.0],
        [852.7236328125, 1123.851318359375, 1500.0, 1500.0],
        [1128.2998046875, 1500.0, 1500.0, 1500.0],
        [1311.297119140625, 1500.0, 1500.0, 1500.0],
    ],
    "prob_slice": [
        [0.5351412892341614, 0.4971863031387329, 0.46741020679473877, 0.5121020078659058],
        [0.5188987851142883, 0.5177638530731201, 0.5354906320571899, 0.5934097170829773],
        [0.5087904930114746, 0.5423778891563416, 0.5405314564704895, 0.5822824835777283],
        [0.5094643831253052, 0.4968552589416504, 0.5117595791816711, 0.5251504778862],
    ],
}

SHIPPED = {
    "init": "xctrsnet volume inverted into W+ (4 L-BFGS steps, then 4 at full resolution)",
    "hu_mean": 2.257727239280939,
    "hu_std": 103.22027903830786,
    "hu_min": -221.7847900390625,
    "hu_max": 406.7808837890625,
    "label_prob_sum": 16873.952401081304,
    "label_voxels": 16118,
    "view_ncc": [0.8748661279678345, 0.7984316945075989],
    "best_restart": 0,
    "metrics": {
        "psnr_db": 25.834672327832262,
        "ssim": 0.3613402425080411,
        "mae_hu": 78.87693505941013,
        "mae_mask_hu": 120.56578913109918,
        "dice": 0.8199238660558745,
        "hd95_mm": 3.0618621784789726,
    },
    # c = 32
    "hu_slice": [
        [-5.6405029296875, -19.92010498046875, -13.96453857421875, 11.42095947265625],
        [135.174072265625, 116.9573974609375, 158.7769775390625, 205.13427734375],
        [134.6331787109375, 164.0792236328125, 142.83544921875, 98.44970703125],
        [85.42333984375, 126.5819091796875, 104.1339111328125, 62.334716796875],
    ],
    "prob_slice": [
        [0.12756012380123138, 0.12281739711761475, 0.18065375089645386, 0.27472445368766785],
        [0.9248974323272705, 0.8950427174568176, 0.9759423732757568, 0.9930239915847778],
        [0.9988725781440735, 0.9995214939117432, 0.9992351531982422, 0.9974036812782288],
        [0.999401330947876, 0.9997803568840027, 0.999535083770752, 0.998460054397583],
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
    assert ReconstructSettings(steps=3, transform=False).fit_overrides() == {
        "steps": 3,
        "warm_steps": 3,  # the steps of every fit, from a network's start too
        "transform": False,
    }
