"""`xfit phantoms` and `xfit simulate` from the command line, including every bad input of the
foundation issue: one line `xfit: error: ...`, exit code 2, no traceback, nothing half-written."""

import json

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from xfit.cli import main
from xfit.io import read_xray


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def ct(tmp_path_factory):
    out = tmp_path_factory.mktemp("ct")
    res = run("phantoms", out / "ph", "-n", 1, "--size", 32, "--spacing", 2.5, "--seed", 3)
    assert res.exit_code == 0, res.output
    return out / "ph" / "case0000_ct.nii.gz"


def assert_user_error(res, *words):
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("xfit: error:"), res.stderr
    assert "Traceback" not in res.output
    for w in words:
        assert w.lower() in lines[0].lower(), lines[0]


def test_help_and_version():
    assert run("--version").exit_code == 0
    for cmd in ("phantoms", "simulate", "train-prior", "sample", "evaluate-prior", "reconstruct"):
        res = run(cmd, "--help")
        assert res.exit_code == 0 and "Usage" in res.output


def test_phantoms_writes_cases_and_montage(ct):
    files = sorted(p.name for p in ct.parent.iterdir())
    assert {"case0000_ct.nii.gz", "case0000_seg.nii.gz", "montage.png"} <= set(files)
    img = nib.load(str(ct))
    assert img.shape == (32, 32, 32)
    assert np.allclose(np.diag(img.affine)[:3], 2.5)


def test_simulate_writes_png_and_sidecars(ct, tmp_path):
    out = tmp_path / "xr"
    res = run("simulate", ct, "--angles", "0,90", "-o", out, "--detector", 48, "--pixel-spacing", 2.0)
    assert res.exit_code == 0, res.output
    for name in ("ap", "lat"):
        side = json.loads((out / f"{name}.json").read_text())
        assert list(side) == [
            "angle_deg",
            "sdd_mm",
            "sod_mm",
            "pixel_spacing_mm",
            "projection",
            "flip_lr",
            "line_integral_scale",
        ]
        xr = read_xray(out / f"{name}.png")
        assert xr.image.shape == (48, 48) and xr.image.max() > 0.5  # line integrals through bone
    assert (out / "views.png").exists() and (out / "simulate.json").exists()
    ap = read_xray(out / "ap.png")
    assert ap.view.angle_deg == 0 and read_xray(out / "lat.png").view.angle_deg == 90


def test_simulate_noise_and_parallel(ct, tmp_path):
    a = run(
        "simulate",
        ct,
        "--angles",
        "30",
        "-o",
        tmp_path / "a",
        "--detector",
        32,
        "--projection",
        "parallel",
        "--dose",
        1e4,
    )
    b = run("simulate", ct, "--angles", "30", "-o", tmp_path / "b", "--detector", 32, "--projection", "parallel")
    assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
    ia, ib = read_xray(tmp_path / "a" / "view30.png").image, read_xray(tmp_path / "b" / "view30.png").image
    diff = ia - ib
    assert 0 < np.abs(diff).mean() < 0.1 * ib.max()


def test_simulate_centre_label_moves_isocentre(ct, tmp_path):
    seg = ct.with_name("case0000_seg.nii.gz")
    values = np.asarray(nib.load(str(seg)).dataobj).astype(int)
    label = int(np.bincount(values[values > 0]).argmax())  # 1, or a VerSe level number
    res = run(
        "simulate", ct, "--angles", "0", "-o", tmp_path / "c", "--mask", seg, "--center-label", label, "--detector", 32
    )
    assert res.exit_code == 0, res.output
    iso = json.loads((tmp_path / "c" / "simulate.json").read_text())["isocenter_mm"]
    assert np.linalg.norm(iso) > 0.1  # the vertebra centroid is not the grid centre


@pytest.mark.parametrize(
    "make,args,words",
    [
        (None, ("simulate", "{missing}", "-o", "{out}"), ("missing",)),
        ("text", ("simulate", "{file}", "-o", "{out}"), ("nifti",)),
        ("2d", ("simulate", "{file}", "-o", "{out}"), ("3d",)),
        ("nan", ("simulate", "{file}", "-o", "{out}"), ("finite",)),
        ("ct", ("simulate", "{ct}", "-o", "{out}", "--sdd", "-100"), ("sdd",)),
        ("ct", ("simulate", "{ct}", "-o", "{out}", "--sdd", "1000", "--sod", "1000"), ("sod",)),
        ("ct", ("simulate", "{ct}", "-o", "{out}", "--angles", "ap,lat"), ("angles",)),
        ("ct", ("simulate", "{ct}", "-o", "{out}", "--center-label", "1"), ("mask",)),
    ],
)
def test_simulate_bad_input(ct, tmp_path, make, args, words):
    f = tmp_path / "input.nii.gz"
    if make == "text":
        f.write_text("this is not a volume")
    elif make == "2d":
        nib.save(nib.Nifti1Image(np.zeros((8, 8), np.float32), np.eye(4)), str(f))
    elif make == "nan":
        data = np.zeros((8, 8, 8), np.float32)
        data[2, 2, 2] = np.nan
        nib.save(nib.Nifti1Image(data, np.eye(4)), str(f))
    out = tmp_path / "out"
    fmt = dict(missing=tmp_path / "missing.nii.gz", out=out, file=f, ct=ct)
    res = run(*[a.format(**fmt) for a in args])
    assert_user_error(res, *words)
    assert not out.exists() or not any(out.iterdir())  # nothing (half-)written


def test_existing_output_needs_force(ct, tmp_path):
    out = tmp_path / "xr"
    assert run("simulate", ct, "-o", out, "--detector", 16).exit_code == 0
    before = (out / "ap.png").read_bytes()
    res = run("simulate", ct, "-o", out, "--detector", 24)
    assert_user_error(res, "exists", "--force")
    assert (out / "ap.png").read_bytes() == before
    assert run("simulate", ct, "-o", out, "--detector", 24, "--force").exit_code == 0
    assert (out / "ap.png").read_bytes() != before
    res = run("phantoms", ct.parent, "-n", 1, "--size", 32, "--spacing", 2.5)
    assert_user_error(res, "exists")


# ----------------------------------------------------------------------------- --style clinical


def test_simulate_clinical_style(ct, tmp_path):
    out = tmp_path / "clin"
    res = run(
        "simulate",
        ct,
        "-o",
        out,
        "--detector",
        48,
        "--pixel-spacing",
        2.0,
        "--style",
        "clinical",
        "--style-param",
        "lateral.monochrome1=true",
        "--style-param",
        "kvp=70",
    )
    assert res.exit_code == 0, res.output
    assert "clinical style (ap preset, 12-bit)" in res.output and "lateral preset, 12-bit, MONOCHROME1" in res.output
    ap, lat = (json.loads((out / f"{n}.json").read_text()) for n in ("ap", "lat"))
    assert ap["line_integral_scale"] is None and "invert" not in ap and lat["invert"] is True
    settings = json.loads((out / "simulate.json").read_text())
    assert settings["style"] == "clinical"
    assert [v["style"]["kvp"] for v in settings["views"]] == [70.0, 70.0]
    assert [v["style"]["preset"] for v in settings["views"]] == ["ap", "lateral"]
    assert read_xray(out / "lat.png").sources["invert"] == "lat.json invert"
    help_text = run("simulate", "--help").output
    assert "--style-param" in help_text and "--style-file" in help_text and "radiographs.md" in help_text


@pytest.mark.parametrize(
    "args,words",
    [
        (("--style", "clinical", "--style-param", "kvp=10"), ("kvp", "[20, 150]")),
        (("--style", "clinical", "--style-param", "kvp=151"), ("kvp",)),
        (("--style", "clinical", "--style-param", "kvpp=90"), ("unknown style parameter", "kvpp")),
        (("--style", "clinical", "--style-param", "oblique.kvp=90"), ("unknown style preset", "oblique")),
        (("--style", "clinical", "--style-param", "spr=-1"), ("spr",)),
        (("--style", "clinical", "--style-param", "kvp"), ("NAME=VALUE",)),
        (("--style", "clinical", "--style-param", "marker_position=0.5,1.5"), ("marker_position", "outside")),
        (("--style", "clinical", "--style-param", "marker_position=0.99,0.99"), ("marker", "outside")),
        (("--style", "clinical", "--style-param", "bit_depth=20"), ("bit_depth",)),
        (("--style", "clinical", "--dose", "1000"), ("--dose", "photons")),
        (("--style", "clinical", "--style-file", "{bad_yaml}"), ("unknown style parameter", "scatter")),
        (("--style", "clinical", "--style-file", "{missing}"), ("missing.yaml",)),
        (("--style-param", "kvp=90"), ("--style-param", "--style clinical")),
        (("--style", "watercolour"), ("--style",)),
    ],
)
def test_simulate_bad_style_is_one_line_and_writes_nothing(ct, tmp_path, args, words):
    bad = tmp_path / "bad.yaml"
    bad.write_text("ap:\n  scatter: 1.0\n")
    out = tmp_path / "out"
    fmt = dict(bad_yaml=bad, missing=tmp_path / "missing.yaml")
    res = run("simulate", ct, "-o", out, "--detector", 48, *[a.format(**fmt) for a in args])
    assert_user_error(res, *words)
    assert not out.exists()
