"""`xfit reconstruct --target`: triangulated clicks, auto, several vertebrae, regions of interest
and their bad inputs, on a tiny random prior and a phantom X-rayed off the vertebra."""

import importlib
import json

import nibabel as nib
import numpy as np
import pytest
import torch
from cli_helpers import assert_user_error, run

from xfit.geometry import world_to_pixel
from xfit.io import write_nifti
from xfit.phantoms.model import make_phantom
from xfit.simulate import simulate

reconstruct_module = importlib.import_module("xfit.reconstruct")
FAST = ["--steps", "3", "--restarts", "1", "--quiet"]
#: where the X-rays' isocentre sits in the phantom (mm): the vertebra is not at the isocentre
ISO = np.array([12.0, -8.0, 30.0])


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_prior_file):
    root = tmp_path_factory.mktemp("targets")
    prior = tiny_prior_file()
    ph = make_phantom(3, size=(64, 56, 96), spacing_mm=2.5, level="L3", noise_hu=0, blur=False)
    ct = root / "ct.nii.gz"
    write_nifti(ct, ph.hu, ph.affine, force=True)
    sims = simulate(
        ct, [0.0, 90.0], root / "xr", detector_shape=(120, 100), pixel_spacing_mm=(2.0, 2.0), isocenter_mm=ISO
    )
    origin = torch.zeros(1, 3, dtype=torch.float64)
    above = torch.tensor([[0.0, 0.0, 25.0]], dtype=torch.float64)
    pix = [world_to_pixel(origin, s.view)[0].tolist() for s in sims]
    pix_above = [world_to_pixel(above, s.view)[0].tolist() for s in sims]
    from scipy import ndimage

    labels = [int(v) for v in np.unique(ph.seg) if 0 < v < 100]  # the phantom's vertebrae
    cents = np.array(ndimage.center_of_mass(np.ones(ph.seg.shape), ph.seg, labels)) @ ph.affine[:3, :3].T
    return dict(
        root=root,
        prior=prior,
        ct=ct,
        ap=sims[0].png,
        lat=sims[1].png,
        pix=pix,
        above=pix_above,
        vertebrae_mm=cents + ph.affine[:3, 3],
    )


def rc(p):
    return f"{p[0]:.3f},{p[1]:.3f}"


def test_clicks_are_triangulated_and_the_cube_placed_there(setup, tmp_path):
    out = tmp_path / "out"
    res = run(
        "reconstruct",
        setup["ap"],
        setup["lat"],
        "-o",
        out,
        "--prior",
        setup["prior"],
        "--target",
        rc(setup["pix"][0]),
        "--target",
        rc(setup["pix"][1]),
        *FAST,
    )
    assert res.exit_code == 0, (res.output, res.stderr)
    assert "target (clicks)" in res.output
    img = nib.load(str(out / "recon.nii.gz"))
    centre = img.affine @ np.array([15.5, 15.5, 15.5, 1.0])
    assert np.allclose(centre[:3], -ISO, atol=0.01)  # the vertebra, in the X-rays' frame
    report = json.loads((out / "report.json").read_text())
    assert report["target"]["method"] == "clicks" and report["target"]["residual_mm"] < 0.01
    assert np.allclose(report["grid"]["centre_mm"], -ISO, atol=0.01)
    for v in report["views"]:
        roi = v["region_of_interest"]
        # the crop holds the 80 mm cube plus its margin, not the whole 120 x 100 detector
        assert roi["rows"] < 120 and roi["cols"] < 100 and min(roi["shape"]) >= 16
    assert (out / "preview.png").stat().st_size > 1000


def test_auto_target_runs_and_reports_its_choice(setup, tmp_path):
    out = tmp_path / "auto"
    res = run("reconstruct", setup["ap"], setup["lat"], "-o", out, "--prior", setup["prior"], "--target", "auto", *FAST)
    assert res.exit_code == 0, (res.output, res.stderr)
    report = json.loads((out / "report.json").read_text())
    assert report["target"]["method"] == "auto" and len(report["target"]["candidates"]) >= 1
    assert np.allclose(report["grid"]["centre_mm"], report["target"]["point_mm"])


def test_auto_target_warns_when_bone_is_dark_in_the_images(setup):
    import dataclasses
    import warnings

    from xfit.prior.checkpoint import load_prior
    from xfit.reconstruct import DEFAULT_PRIOR, load_inputs, locate

    prior = load_prior(DEFAULT_PRIOR)  # its mean vertebra is the template
    inputs = load_inputs([setup["ap"], setup["lat"]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        found = locate(prior, inputs, "auto")
    # a vertebra, not necessarily the wanted one (docs/real_radiographs.md): the phantom's frame is
    # the X-rays' shifted by ISO (the wanted vertebra sits at -ISO)
    assert np.linalg.norm(setup["vertebrae_mm"] - (found.point_mm + ISO), axis=1).min() < 10.0
    dark = dataclasses.replace(inputs, images=[img.max() - img for img in inputs.images])
    with pytest.warns(UserWarning, match="inverted"):
        locate(prior, dark, "auto")


def test_several_vertebrae_get_folders_and_one_label_map(setup, tmp_path):
    out = tmp_path / "many"
    res = run(
        "reconstruct",
        setup["ap"],
        setup["lat"],
        "-o",
        out,
        "--prior",
        setup["prior"],
        "--target",
        rc(setup["pix"][0]),
        "--target",
        rc(setup["pix"][1]),
        "--target",
        rc(setup["above"][0]),
        "--target",
        rc(setup["above"][1]),
        "--levels",
        "L3,L2",
        *FAST,
    )
    assert res.exit_code == 0, (res.output, res.stderr)
    for name in ("L3", "L2"):
        assert (out / name / "recon.nii.gz").exists()
    labels = nib.load(str(out / "labels.nii.gz"))
    assert set(np.unique(np.asarray(labels.dataobj)).tolist()) <= {0, 21, 22}
    summary = json.loads((out / "report.json").read_text())
    assert [v["label"] for v in summary["vertebrae"]] == [22, 21]
    assert [v["name"] for v in summary["vertebrae"]] == ["L3", "L2"]
    # the combined grid covers both cubes: 25 mm apart along z at 2.5 mm
    assert labels.shape[2] == 32 + 10


@pytest.mark.parametrize(
    "targets, words",
    [
        (["500,10", "50,50"], ["outside", "image 0"]),
        (["60,50", "10,50"], ["inconsistent"]),
        (["60,50"], ["--target value(s) for 2 images"]),
        (["auto", "60,50"], ["alone"]),
        (["60"], ["ROW,COL"]),
    ],
)
def test_bad_targets_get_one_line(setup, tmp_path, targets, words):
    out = tmp_path / "bad"
    args = [a for t in targets for a in ("--target", t)]
    res = run("reconstruct", setup["ap"], setup["lat"], "-o", out, "--prior", setup["prior"], *args, *FAST)
    assert_user_error(res, *words)
    assert not out.exists()


def test_a_cube_leaving_the_image_is_refused(setup, tmp_path):
    out = tmp_path / "edge"
    # a consistent point near the top edge of both images: the 80 mm cube does not fit
    top = torch.tensor([[0.0, 0.0, 125.0]], dtype=torch.float64) - torch.as_tensor(ISO)
    from xfit.io import read_xray

    views = [read_xray(p).view for p in (setup["ap"], setup["lat"])]
    pix = [world_to_pixel(top, v)[0].tolist() for v in views]
    res = run(
        "reconstruct",
        setup["ap"],
        setup["lat"],
        "-o",
        out,
        "--prior",
        setup["prior"],
        "--target",
        rc(pix[0]),
        "--target",
        rc(pix[1]),
        *FAST,
    )
    assert_user_error(res, "leaves image")
    assert not out.exists()


def test_more_vertebrae_than_memory_allows(setup, tmp_path, monkeypatch):
    monkeypatch.setattr(reconstruct_module, "MAX_COMBINED_VOXELS", 30**3)
    out = tmp_path / "mem"
    res = run(
        "reconstruct",
        setup["ap"],
        setup["lat"],
        "-o",
        out,
        "--prior",
        setup["prior"],
        "--target",
        rc(setup["pix"][0]),
        "--target",
        rc(setup["pix"][1]),
        "--target",
        rc(setup["above"][0]),
        "--target",
        rc(setup["above"][1]),
        *FAST,
    )
    assert_user_error(res, "combined label map")
    assert not out.exists()
    monkeypatch.setattr(reconstruct_module, "MAX_TARGETS", 1)
    res = run(
        "reconstruct",
        setup["ap"],
        setup["lat"],
        "-o",
        out,
        "--prior",
        setup["prior"],
        "--target",
        rc(setup["pix"][0]),
        "--target",
        rc(setup["pix"][1]),
        "--target",
        rc(setup["above"][0]),
        "--target",
        rc(setup["above"][1]),
        *FAST,
    )
    assert_user_error(res, "at most 1")
    res = run(
        "reconstruct",
        setup["ap"],
        setup["lat"],
        "-o",
        out,
        "--prior",
        setup["prior"],
        "--target",
        rc(setup["pix"][0]),
        "--target",
        rc(setup["pix"][1]),
        "--levels",
        "L1,L2",
        *FAST,
    )
    assert_user_error(res, "for one vertebra use --level")


def test_clicks_are_read_in_the_file_as_stored(setup, tmp_path):
    """A PNG stored mirrored (sidecar flip_lr): the click is in the stored pixels, as a viewer shows."""
    from PIL import Image

    from xfit.io import stored_to_image

    img = np.asarray(Image.open(setup["ap"]))
    mirrored = tmp_path / "ap.png"
    Image.fromarray(np.ascontiguousarray(img[:, ::-1])).save(mirrored)
    side = json.loads(setup["ap"].with_suffix(".json").read_text())
    side["flip_lr"] = True
    mirrored.with_suffix(".json").write_text(json.dumps(side))
    r, c = setup["pix"][0]
    stored = (r, img.shape[1] - 1 - c)
    out = tmp_path / "out"
    res = run(
        "reconstruct",
        mirrored,
        setup["lat"],
        "-o",
        out,
        "--prior",
        setup["prior"],
        "--target",
        rc(stored),
        "--target",
        rc(setup["pix"][1]),
        *FAST,
    )
    assert res.exit_code == 0, (res.output, res.stderr)
    report = json.loads((out / "report.json").read_text())
    assert np.allclose(report["grid"]["centre_mm"], -ISO, atol=0.01)
    assert report["target"]["clicked_rc"][0] == pytest.approx(list(stored), abs=1e-3)  # --target has 3 decimals
    assert stored_to_image((2, 5), (10, 20), (True, False, False)) == (5, 2)
    assert stored_to_image((2, 5), (10, 20), (True, True, True)) == (20 - 1 - 5, 10 - 1 - 2)
