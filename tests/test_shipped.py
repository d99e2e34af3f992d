"""What a new user gets on a fresh install: the shipped prior and the example X-rays work."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

import xfit
from xfit.io import read_nifti, read_xray
from xfit.prior.checkpoint import load_prior
from xfit.reconstruct import DEFAULT_PRIOR, centred_vertebra

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_shipped_prior_loads_with_its_metadata():
    prior = load_prior(DEFAULT_PRIOR)
    assert prior.config.resolution == 64 and prior.config.spacing_mm == 1.25
    assert prior.meta["training"]["kimg"] > 0  # trained, not a random initialisation
    assert DEFAULT_PRIOR.stat().st_size < 20e6


def test_examples_have_geometry_and_truth():
    ap, lat = read_xray(EXAMPLES / "ap.png"), read_xray(EXAMPLES / "lat.png")
    assert (ap.view.angle_deg, lat.view.angle_deg) == (0.0, 90.0)
    assert ap.line_integral_scale and ap.image.max() > 1.0
    ct, seg = read_nifti(EXAMPLES / "ct.nii.gz"), read_nifti(EXAMPLES / "seg.nii.gz")
    labels = np.rint(seg.data).astype(np.int16)
    assert ct.data.shape == (64, 64, 64)
    centred = centred_vertebra(labels)  # every vertebra carries its VerSe level; the truth is the centred one
    assert centred.any() and 8 <= int(labels[centred][0]) <= 24
    assert labels[32, 32, 32] == labels[centred][0] or not labels[32, 32, 32]


def test_default_reconstruction_runs_on_the_examples():
    rec = xfit.reconstruct(
        [EXAMPLES / "ap.png", EXAMPLES / "lat.png"], steps=2, restarts=1, gt=EXAMPLES / "ct.nii.gz", progress=False
    )
    assert rec.hu.shape == (64, 64, 64)
    assert rec.prior_path == DEFAULT_PRIOR
    assert {"psnr_db", "dice"} <= set(rec.metrics)


def file_sha(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


#: Every network shipped in ``xfit/data`` (``METHOD`` or ``METHOD@TAG``).
SHIPPED_NETWORKS = [
    "x2ct-cnn",
    "x2ct-gan",
    "ear",
    "transvert",
    "xctrsnet",
    "igcn",
    "x2ct-cnn@jitter",
    "x2ct-gan@jitter",
    "transvert@jitter",
    "ear@jitter",
    "xctrsnet@jitter",
    "xctrsnet@style",
    "xctrsnet@wholebody",
    "x2ct-cnn@style",
    "x2ct-cnn@wholebody",
]


def test_every_shipped_network_is_checked_below():
    """No checkpoint in ``xfit/data`` escapes the checks below (:data:`SHIPPED_NETWORKS`)."""
    from xfit.baselines.infer import shipped_checkpoint
    from xfit.baselines.methods import DATA_DIR

    listed = {shipped_checkpoint(*(m.split("@") + [None])[:2]).name for m in SHIPPED_NETWORKS}
    assert {p.name for p in Path(DATA_DIR).glob("baseline-*.safetensors")} == listed


@pytest.mark.parametrize("method", SHIPPED_NETWORKS)
def test_shipped_baselines_are_trained_on_the_priors_data(method):
    """Each baseline ships in float16 under 20 MB, trained on the crops the shipped prior saw;
    a ``@jitter`` variant with the second view anywhere in 40..140 degrees."""
    from safetensors import safe_open

    from xfit.baselines.infer import load_baseline, shipped_checkpoint

    base, _, tag = method.partition("@")
    path = shipped_checkpoint(base, tag or None)
    assert path.stat().st_size < 20e6
    with safe_open(str(path), "pt") as f:
        assert all(f.get_tensor(k).dtype in (torch.float16, torch.int64) for k in f.keys())
    b = load_baseline(base, path)
    assert b.config.views.jitters() == ([0.0, 50.0] if tag == "jitter" else [0.0] * len(b.config.views.angles_deg))
    prior = load_prior(DEFAULT_PRIOR)
    t, p = b.meta["training"], prior.meta["training"]
    assert t["steps"] == b.config.training.steps and t["images"] > 0 and t["wall_seconds"] > 0
    assert (t["examples"], t["levels"], t["layout"]) == (p["examples"], p["levels"], p["layout"])
    # finished (``ship-baselines --finish``): 600 more images from the network shipped before, the
    # rate decaying to 0 on a cosine; EAR was trained on its paper's cosine from the start
    if base == "ear":
        assert b.config.training.schedule == "cosine" and "init_from" not in t
    else:
        assert b.config.name.endswith("-finish") and b.config.training.schedule == "cosine"
        assert t["images"] == 600 and Path(t["init_from"]["path"]).name == path.name
        assert len(t["init_from"]["sha256"]) == 64 and t["init_from"]["sha256"] != file_sha(path)
        # before the finish: 3000 images from random weights, or 1000 fine-tuning ones for
        # @style (from the shipped network, clinical-style radiographs) and @wholebody (from
        # @style, whole-torso X-rays as well)
        assert t["init_from"]["images"] == (1000 if tag in ("style", "wholebody") else 3000)
    assert (b.config.style.probability > 0) == (tag in ("style", "wholebody"))
    assert (b.config.whole_body.probability > 0) == (tag == "wholebody")
