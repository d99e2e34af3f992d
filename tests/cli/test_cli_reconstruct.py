"""`xfit reconstruct` end to end on a tiny random prior, and every bad input of the fitting issue."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from cli_helpers import assert_user_error, run
from PIL import Image

import xfit

FAST = ["--steps", "4", "--restarts", "2", "--quiet"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_prior_file):
    root = tmp_path_factory.mktemp("rec")
    prior = tiny_prior_file()
    assert run("phantoms", root / "ct", "-n", 1, "--size", 32, "--spacing", 2.5, "--seed", 5).exit_code == 0
    ct = root / "ct" / "case0000_ct.nii.gz"
    res = run("simulate", ct, "--angles", "0,90", "-o", root / "xr", "--detector", 32, "--pixel-spacing", 3.0)
    assert res.exit_code == 0, res.output
    return dict(root=root, prior=prior, ct=ct, ap=root / "xr" / "ap.png", lat=root / "xr" / "lat.png")


def test_reconstruct_writes_all_outputs(setup, tmp_path):
    out = tmp_path / "out"
    res = run(
        "reconstruct",
        setup["ap"],
        setup["lat"],
        "-o",
        out,
        "--prior",
        setup["prior"],
        "--gt",
        setup["ct"],
        "--mesh",
        *FAST,
    )
    assert res.exit_code == 0, (res.output, res.stderr)
    for name in ("recon.nii.gz", "labels.nii.gz", "uncertainty.nii.gz", "preview.png", "report.json", "surface.stl"):
        assert (out / name).exists(), name
    img = nib.load(str(out / "recon.nii.gz"))
    assert img.shape == (32, 32, 32)
    centre = img.affine @ np.array([15.5, 15.5, 15.5, 1.0])
    assert np.allclose(centre[:3], 0, atol=1e-4)  # isocentre at the world origin
    report = json.loads((out / "report.json").read_text())
    assert report["prior"]["sha256"] and len(report["views"]) == 2
    assert {"psnr_db", "ssim", "mae_hu", "dice"} <= set(report["metrics_vs_gt"])
    assert report["steps_run"] <= 4 and "generator" in report["timings_s"]
    # never overwrite without --force
    res = run("reconstruct", setup["ap"], setup["lat"], "-o", out, "--prior", setup["prior"], *FAST)
    assert_user_error(res, "exists")


def test_python_api_in_memory(setup):
    rec = xfit.reconstruct([setup["ap"], setup["lat"]], prior=setup["prior"], steps=3, restarts=1, progress=False)
    assert rec.hu.shape == (32, 32, 32) and rec.fit.uncertainty is None
    assert len(rec.fit.projections) == 2 and rec.fit.projections[0].shape == (32, 32)


def test_single_view_needs_flag(setup, tmp_path):
    res = run("reconstruct", setup["ap"], "-o", tmp_path / "a", "--prior", setup["prior"], *FAST)
    assert_user_error(res, "one x-ray", "--allow-single-view")
    res = run("reconstruct", setup["ap"], "-o", tmp_path / "b", "--prior", setup["prior"], "--allow-single-view", *FAST)
    assert res.exit_code == 0, res.stderr
    assert "warning" in res.stderr and "single view" in res.stderr


def _png(path, shape, value=100):
    arr = np.full(shape, value, np.uint8)
    arr[shape[0] // 3 : shape[0] // 2, shape[1] // 3 : shape[1] // 2] = 200
    Image.fromarray(arr).save(path)
    return path


@pytest.mark.parametrize(
    "case,words",
    [
        ("unreadable", ("ap.png",)),
        ("sizes_no_spacing", ("spacing",)),
        ("angle_count", ("angle",)),
        ("identical", ("same angle",)),
        ("corrupt_prior", ("prior",)),
        ("foreign_prior", ("xfit",)),
        ("missing_image", ("not found",)),
    ],
)
def test_bad_input(setup, tmp_path, case, words):
    images = [setup["ap"], setup["lat"]]
    extra = []
    prior = setup["prior"]
    if case == "unreadable":
        bad = tmp_path / "ap.png"
        bad.write_bytes(b"not an image at all")
        (tmp_path / "ap.json").write_text(setup["ap"].with_suffix(".json").read_text())
        images = [bad, setup["lat"]]
    elif case == "sizes_no_spacing":
        images = [_png(tmp_path / "a.png", (40, 40)), _png(tmp_path / "b.png", (30, 50))]
        extra = ["--angles", "0,90"]
    elif case == "angle_count":
        extra = ["--angles", "0,45,90"]
    elif case == "identical":
        extra = ["--angles", "0,0"]
    elif case == "corrupt_prior":
        prior = tmp_path / "prior.safetensors"
        prior.write_bytes(np.random.default_rng(0).bytes(1000))
    elif case == "foreign_prior":
        from safetensors.torch import save_file

        prior = tmp_path / "foreign.safetensors"
        save_file({"weight": torch.zeros(3)}, str(prior))
    elif case == "missing_image":
        images = [tmp_path / "nope.png", setup["lat"]]
    out = tmp_path / "out"
    res = run("reconstruct", *images, "-o", out, "--prior", prior, *extra, *FAST)
    assert_user_error(res, *words)
    assert not out.exists()  # nothing written, not even an empty folder


def test_out_of_memory_is_one_line(setup, tmp_path, monkeypatch):
    import xfit.fitting

    def boom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20 GiB")

    monkeypatch.setattr(xfit.fitting, "fit", boom)
    res = run("reconstruct", setup["ap"], setup["lat"], "-o", tmp_path / "o", "--prior", setup["prior"], *FAST)
    assert_user_error(res, "out of memory", "smaller")
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- issue 12: whole folders, checks first


def test_fault_while_writing_leaves_no_partial_folder(setup, tmp_path, monkeypatch):
    import importlib

    R = importlib.import_module("xfit.reconstruct")  # xfit.reconstruct is also the function
    out = tmp_path / "out"

    def boom(*a, **k):
        raise KeyboardInterrupt  # after recon, labels, uncertainty and the STL were written

    monkeypatch.setattr(R, "write_preview", boom)
    res = run("reconstruct", setup["ap"], setup["lat"], "-o", out, "--prior", setup["prior"], "--mesh", *FAST)
    assert res.exit_code == 130 and "interrupted" in res.stderr
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    monkeypatch.undo()
    # the rerun is not refused, and --force later leaves no stale surface.stl
    res = run("reconstruct", setup["ap"], setup["lat"], "-o", out, "--prior", setup["prior"], "--mesh", *FAST)
    assert res.exit_code == 0, res.stderr
    assert (out / "surface.stl").exists()
    res = run("reconstruct", setup["ap"], setup["lat"], "-o", out, "--prior", setup["prior"], "--force", *FAST)
    assert res.exit_code == 0, res.stderr
    assert not (out / "surface.stl").exists() and (out / "report.json").exists()


def test_output_and_config_checked_before_the_fit(setup, tmp_path, monkeypatch):
    import xfit.fitting
    import xfit.prior.checkpoint

    def no_work(*a, **k):
        raise AssertionError("expensive work started before the checks")

    monkeypatch.setattr(xfit.fitting, "fit", no_work)
    monkeypatch.setattr(xfit.prior.checkpoint, "load_prior", no_work)
    base = ("reconstruct", setup["ap"], setup["lat"], "--prior", setup["prior"], *FAST)
    (tmp_path / "afile").write_text("x")
    assert_user_error(run(*base, "-o", tmp_path / "afile" / "out"), "afile")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "x").write_text("x")
    assert_user_error(run(*base, "-o", taken), "exists", "--force")
    assert_user_error(run(*base, "-o", setup["ap"].parent, "--force"), "holds the input")
    bad = tmp_path / "fit.yaml"
    bad.write_text("refine_pose: 'false'\n")
    assert_user_error(run(*base, "-o", tmp_path / "o", "--config", bad), "refine_pose")
    assert_user_error(run(*base, "-o", tmp_path / "o", "--gt", tmp_path / "nogt.nii.gz"), "not found")
    assert_user_error(run(*base, "-o", tmp_path / "o", "--sdd", "nan"), "--sdd")
    assert_user_error(run(*base, "-o", tmp_path / "o", "--spacing", "0,1"), "--spacing")
    assert not (tmp_path / "o").exists()


def test_report_is_strict_json_and_empty_mesh_warns(setup, tmp_path):
    rec = xfit.reconstruct([setup["ap"], setup["lat"]], prior=setup["prior"], steps=2, restarts=1, progress=False)
    rec.fit.history.append({"total": float("nan"), "data": float("inf")})
    rec.fit.label_prob = np.zeros_like(rec.fit.label_prob)
    from xfit.io import parse_json_strict
    from xfit.reconstruct import write_reconstruction

    with pytest.warns(UserWarning, match="surface"):
        write_reconstruction(rec, tmp_path / "o", mesh=True)
    report = parse_json_strict((tmp_path / "o" / "report.json").read_text())
    assert report["losses"]["history"][-1] == {"total": None, "data": None}
    assert report["surface"].startswith("not written") and not (tmp_path / "o" / "surface.stl").exists()


def test_centred_vertebra_picks_the_label_at_the_grid_centre():
    import numpy as np

    from xfit.reconstruct import centred_vertebra

    lab = np.zeros((20, 20, 20), np.int16)
    lab[6:14, 6:14, 2:9] = 19  # T12 below
    lab[6:14, 6:14, 9:16] = 20  # L1 holds the centre voxel (10, 10, 10)
    assert np.array_equal(centred_vertebra(lab), lab == 20)
    lab[10, 10, 10] = 0  # a hole at the centre: the label whose centroid is nearest
    assert np.array_equal(centred_vertebra(lab), lab == 20)
    assert not centred_vertebra(np.zeros((4, 4, 4), np.int16)).any()
