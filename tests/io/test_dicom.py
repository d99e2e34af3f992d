"""Tests of xfit.io.dicom: DICOM radiographs read the way they are stored (issue 17).

Every DICOM file is written by pydicom in the test. In each case the array and the View that the
fit sees must equal what the equivalent PNG + sidecar gives (``read_xray`` of both).
"""

from __future__ import annotations

import json
import types
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from dicom_files import COLS, ROWS
from dicom_files import beams_eye as _beams_eye
from dicom_files import write_dicom as _dicom

from xfit.errors import GeometryError, InputError, XfitError
from xfit.geometry import View, detector_frame
from xfit.io import read_dicom, read_xray, write_png16, write_sidecar
from xfit.io.dicom import TAG_TABLE, beam_axes, orientation_vectors, tilt_pose


def _png(path: Path, pixels: np.ndarray, **sidecar) -> Path:
    """PNG + sidecar in a folder of their own (a sidecar beside the DICOM would be read with it)."""
    path = path.parent / "png" / path.name
    geo = dict(sdd_mm=1100.0, sod_mm=700.0, pixel_spacing_mm=[0.2, 0.3], projection="cone", flip_lr=False)
    geo.update(sidecar)
    write_png16(path, pixels)
    write_sidecar(path.with_suffix(".json"), geo)
    return path


def _same(dcm, png, **options):
    """read_xray of the DICOM and of the PNG + sidecar give the same array and view."""
    a = read_xray(dcm, **options)
    b = read_xray(png)
    np.testing.assert_allclose(a.image, b.image, atol=2e-6, rtol=0)
    _assert_views_equal(a.view, b.view)
    return a


def _assert_views_equal(a: View, b: View) -> None:
    """Equal views (numbers to 1e-9 relative: a magnification product may differ in the last bit)."""
    da, db = asdict(a), asdict(b)
    assert da.keys() == db.keys()
    for key in da:
        if isinstance(da[key], str) or da[key] is None or db[key] is None:
            assert da[key] == db[key], (key, a, b)
        else:
            np.testing.assert_allclose(
                np.asarray(da[key], float), np.asarray(db[key], float), rtol=1e-9, atol=1e-12, err_msg=key
            )


def _quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn(*args, **kw)


# ----------------------------------------------------------------------------- conventions


def test_tag_table_and_axes():
    assert {row[1] for row in TAG_TABLE} >= {
        "ViewPosition",
        "PositionerPrimaryAngle",
        "PatientOrientation",
        "ImagerPixelSpacing",
        "PixelSpacing",
        "PresentationLUTShape",
    }
    # xfit's beam's-eye directions: AP columns toward L, PA toward R, LL toward A, RL toward P
    for angle, letter in ((0, "L"), (180, "R"), (90, "A"), (-90, "P")):
        u, v = beam_axes(angle)
        np.testing.assert_allclose(u, orientation_vectors(letter), atol=1e-12)
        np.testing.assert_allclose(v, orientation_vectors("F"), atol=1e-12)
    np.testing.assert_allclose(orientation_vectors("LF"), np.array([-1, 0, -1]) / np.sqrt(2))
    with pytest.raises(InputError):
        orientation_vectors("X")


def test_cranial_tilt_moves_the_detector_toward_the_head():
    pose = tilt_pose(90.0, 20.0)
    frame = detector_frame([View(angle_deg=90.0, pose=pose, shape=(ROWS, COLS))], dtype=__import__("torch").float64)
    centre, source = frame["centre"][0].numpy(), frame["source"][0].numpy()
    assert centre[2] > 0 and source[2] < 0  # detector cranial, source caudal
    assert centre[0] < 0  # LAO: the detector stays on the patient's left


# ----------------------------------------------------------------------------- stored as radiology stores them


@pytest.mark.parametrize(
    "view_position, orientation, angle, stored",
    [
        ("PA", ["L", "F"], 180.0, np.fliplr),  # PA chest as displayed: patient's right on the image left
        ("AP", ["L", "F"], 0.0, lambda a: a),  # AP as displayed == beam's-eye view
        ("LL", ["A", "F"], 90.0, lambda a: a),  # left lateral seen from the tube (beam's eye)
        ("LL", ["P", "F"], 90.0, np.fliplr),  # left lateral displayed facing the viewer's left
        ("RL", ["P", "F"], -90.0, lambda a: a),
        ("RL", ["A", "F"], -90.0, np.fliplr),
        ("AP", ["L", "H"], 0.0, np.flipud),  # stored upside down
        ("PA", ["F", "L"], 180.0, lambda a: np.fliplr(a).T),  # stored transposed
    ],
)
def test_dx_views_equal_png_and_sidecar(tmp_path, view_position, orientation, angle, stored):
    truth = _beams_eye()
    spacing = [0.3, 0.2] if orientation[0] in "FH" else [0.2, 0.3]  # a transposed file's own row/col
    dcm = _dicom(
        tmp_path / "x.dcm",
        stored(truth),
        ViewPosition=view_position,
        PatientOrientation=orientation,
        ImagerPixelSpacing=spacing,
    )
    png = _png(tmp_path / "x.png", truth, angle_deg=angle)
    xr = _quiet(_same, dcm, png)
    assert xr.sources["angle_deg"] == f"DICOM ViewPosition {view_position}"
    assert xr.sources["pixel_spacing_mm"].startswith("DICOM ImagerPixelSpacing")
    assert xr.sources["sdd_mm"].startswith("DICOM DistanceSourceToDetector")
    assert xr.sources["sod_mm"].startswith("DICOM DistanceSourceToPatient")
    assert xr.sources["orientation"].startswith("DICOM PatientOrientation " + "\\".join(orientation))


def test_xa_lao_90_equals_png(tmp_path):
    truth = _beams_eye()
    # LAO 90: detector on the patient's left, source on the right == xfit's theta 90; stored as
    # seen from the detector (posterior on the image right)
    dcm = _dicom(
        tmp_path / "xa.dcm",
        np.fliplr(truth),
        Modality="XA",
        PositionerPrimaryAngle=90.0,
        PositionerSecondaryAngle=0.0,
        PatientOrientation=["P", "F"],
    )
    png = _png(tmp_path / "xa.png", truth, angle_deg=90.0)
    xr = _quiet(_same, dcm, png)
    assert "LAO 90" in xr.sources["angle_deg"]
    # without PatientOrientation an XA image is assumed stored as seen from the detector: same result
    dcm2 = _dicom(tmp_path / "xa2.dcm", np.fliplr(truth), Modality="XA", PositionerPrimaryAngle=90.0)
    with pytest.warns(UserWarning, match="no PatientOrientation.*detector"):
        _same(dcm2, png)


@pytest.mark.parametrize("primary, angle", [(0.0, 180.0), (-90.0, -90.0), (45.0, 135.0), (-30.0, -150.0)])
def test_xa_primary_angles(tmp_path, primary, angle):
    truth = _beams_eye()
    u, _ = beam_axes(angle)
    row = "".join(
        l
        for l, vec in (("L", (-1, 0, 0)), ("R", (1, 0, 0)), ("A", (0, 1, 0)), ("P", (0, -1, 0)))
        if np.dot(u, vec) > 0.3
    )
    dcm = _dicom(
        tmp_path / "xa.dcm", truth, Modality="XA", PositionerPrimaryAngle=primary, PatientOrientation=[row, "F"]
    )
    _quiet(_same, dcm, _png(tmp_path / "xa.png", truth, angle_deg=angle))


def test_xa_cranial_tilt_is_a_pose(tmp_path):
    truth = _beams_eye()
    dcm = _dicom(
        tmp_path / "xa.dcm",
        truth,
        Modality="XA",
        PositionerPrimaryAngle=90.0,
        PositionerSecondaryAngle=20.0,
        PatientOrientation=["A", "F"],
    )
    xr = _quiet(_same, dcm, _png(tmp_path / "xa.png", truth, angle_deg=90.0, pose=tilt_pose(90.0, 20.0)))
    assert "cranial" in xr.sources["pose"]


def test_monochrome1_presentation_lut_and_rescale(tmp_path):
    truth = _beams_eye()
    png = _png(tmp_path / "x.png", truth, angle_deg=0.0)
    inverted = (65535 - truth.astype(np.int64)).astype(np.uint16)
    args = dict(ViewPosition="AP", PatientOrientation=["L", "F"])
    xr = _quiet(
        _same,
        _dicom(
            tmp_path / "m1.dcm",
            inverted,
            PhotometricInterpretation="MONOCHROME1",
            PresentationLUTShape="INVERSE",
            **args,
        ),
        png,
    )
    assert "MONOCHROME1" in xr.sources["invert"]
    _quiet(
        _same,
        _dicom(
            tmp_path / "m2.dcm",
            truth,
            PresentationLUTShape="IDENTITY",
            RescaleSlope=2.0,
            RescaleIntercept=-100.0,
            **args,
        ),
        png,
    )
    # a non-DX image may invert a MONOCHROME2 display with an INVERSE presentation LUT
    xr = _quiet(
        _same,
        _dicom(
            tmp_path / "m3.dcm",
            inverted,
            Modality="RF",
            PresentationLUTShape="INVERSE",
            PositionerPrimaryAngle=180.0,
            PatientOrientation=["L", "F"],
        ),
        png,
    )
    assert "INVERSE" in xr.sources["invert"]
    # DX pairs INVERSE with MONOCHROME1 only
    with pytest.raises(InputError, match="PresentationLUTShape"):
        read_xray(_dicom(tmp_path / "bad.dcm", truth, PresentationLUTShape="INVERSE", **args))
    # the user's --invert still applies on top
    both = read_xray(tmp_path / "m1.dcm", invert=True)
    np.testing.assert_allclose(both.image, 1.0 - read_xray(png).image, atol=2e-6)
    assert both.sources["invert"].startswith("option invert")


def test_voi_lut_sequence_is_applied(tmp_path):
    from pydicom.dataset import Dataset

    rng = np.random.default_rng(3)
    stored = rng.integers(0, 4096, size=(ROWS, COLS)).astype(np.uint16)
    stored[0, 0], stored[1, 1] = 0, 4095
    lut = np.rint(65535 * np.sqrt(np.arange(4096) / 4095)).astype(np.uint16)
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.add_new(0x00283006, "US", lut.tolist())  # LUTData as US (the OW default would need bytes)
    dcm = _dicom(tmp_path / "v.dcm", stored, ViewPosition="AP", PatientOrientation=["L", "F"], VOILUTSequence=[item])
    xr = _quiet(_same, dcm, _png(tmp_path / "v.png", lut[stored], angle_deg=0.0))
    assert "VOILUTSequence" in xr.sources["voi_lut"]


# ----------------------------------------------------------------------------- spacing and distances


def test_spacing_from_pixel_spacing_and_magnification(tmp_path):
    truth = _beams_eye()
    args = dict(ViewPosition="AP", PatientOrientation=["L", "F"], ImagerPixelSpacing=None)
    # PixelSpacing is in the patient: times EstimatedRadiographicMagnificationFactor
    dcm = _dicom(
        tmp_path / "e.dcm", truth, PixelSpacing=[0.2, 0.25], EstimatedRadiographicMagnificationFactor=1.2, **args
    )
    xr = _quiet(_same, dcm, _png(tmp_path / "e.png", truth, angle_deg=0.0, pixel_spacing_mm=[0.24, 0.3]))
    assert "EstimatedRadiographicMagnificationFactor" in xr.sources["pixel_spacing_mm"]
    # without ERMF: times sdd/sod, with a warning
    dcm = _dicom(tmp_path / "s.dcm", truth, PixelSpacing=[0.14, 0.21], **args)
    with pytest.warns(UserWarning, match="PixelSpacing taken at the isocentre"):
        xr = _same(dcm, _png(tmp_path / "s.png", truth, angle_deg=0.0, pixel_spacing_mm=[0.22, 0.33]))
    # ImagerPixelSpacing wins over PixelSpacing; consistent ERMF is fine
    dcm = _dicom(
        tmp_path / "i.dcm",
        truth,
        ViewPosition="AP",
        PatientOrientation=["L", "F"],
        PixelSpacing=[0.1, 0.15],
        EstimatedRadiographicMagnificationFactor=2.0,
    )
    _quiet(_same, dcm, _png(tmp_path / "i.png", truth, angle_deg=0.0))
    # ... a contradicting one is an error naming the tags
    dcm = _dicom(
        tmp_path / "c.dcm",
        truth,
        ViewPosition="AP",
        PatientOrientation=["L", "F"],
        PixelSpacing=[0.1, 0.15],
        EstimatedRadiographicMagnificationFactor=1.3,
    )
    with pytest.raises(InputError, match="ImagerPixelSpacing.*PixelSpacing.*EstimatedRadiographicMagnificationFactor"):
        read_xray(dcm)


def test_distances(tmp_path):
    truth = _beams_eye()
    args = dict(ViewPosition="AP", PatientOrientation=["L", "F"])
    with pytest.raises(InputError, match="DistanceSourceToPatient.*DistanceSourceToDetector"):
        read_xray(_dicom(tmp_path / "a.dcm", truth, DistanceSourceToPatient=1200.0, **args))
    # DistanceSourceToIsocenter is preferred
    dcm = _dicom(tmp_path / "b.dcm", truth, DistanceSourceToIsocenter=800.0, **args)
    xr = _quiet(_same, dcm, _png(tmp_path / "b.png", truth, angle_deg=0.0, sod_mm=800.0))
    assert "DistanceSourceToIsocenter" in xr.sources["sod_mm"]
    # sdd + ERMF, no sod: sod = sdd / ERMF
    dcm = _dicom(
        tmp_path / "c.dcm", truth, DistanceSourceToPatient=None, EstimatedRadiographicMagnificationFactor=1.1, **args
    )
    xr = _quiet(_same, dcm, _png(tmp_path / "c.png", truth, angle_deg=0.0, sod_mm=1000.0))
    assert "EstimatedRadiographicMagnificationFactor" in xr.sources["sod_mm"]


# ----------------------------------------------------------------------------- missing tags


@pytest.mark.parametrize(
    "missing",
    [
        "ViewPosition",
        "PatientOrientation",
        "ImagerPixelSpacing",
        "DistanceSourceToDetector",
        "DistanceSourceToPatient",
        "PhotometricInterpretation",
        "Modality",
    ],
)
def test_each_tag_missing_in_turn(tmp_path, missing):
    truth = _beams_eye()
    tags = dict(ViewPosition="PA", PatientOrientation=["L", "F"])
    tags[missing] = None
    dcm = _dicom(tmp_path / "pa.dcm", np.fliplr(truth), **tags)
    side = dict(angle_deg=180.0)
    options: dict = {}
    if missing == "ViewPosition":
        with pytest.raises(GeometryError, match="angle is unknown"):
            read_xray(dcm)
        options["angle_deg"] = 180.0
    if missing == "ImagerPixelSpacing":
        with pytest.raises(GeometryError, match="pixel spacing is unknown"):
            read_xray(dcm)
        options["pixel_spacing_mm"] = [0.2, 0.3]
    if missing == "DistanceSourceToDetector":
        side["sdd_mm"] = 1800.0
    if missing == "DistanceSourceToPatient":
        side["sod_mm"] = 1100.0 * 1500.0 / 1800.0  # the default 1500 would not fit before 1100: ratio kept
    png = _png(tmp_path / "pa.png", truth, **side)
    warned = missing in (
        "PatientOrientation",
        "DistanceSourceToDetector",
        "DistanceSourceToPatient",
        "PhotometricInterpretation",
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        xr = _same(dcm, png, **options)
    user = [w for w in caught if issubclass(w.category, UserWarning)]
    assert len(user) == (1 if warned else 0), [str(w.message) for w in user]
    if warned:
        assert "assumed" in str(user[0].message)
    if missing == "ViewPosition":
        assert xr.sources["angle_deg"] == "option angle_deg (--angles)"
    if missing == "PatientOrientation":
        assert xr.sources["orientation"].startswith("assumed")
        assert "patient's right on the image left" in str(user[0].message)
    if missing.startswith("Distance"):
        key = "sdd_mm" if missing.endswith("Detector") else "sod_mm"
        assert xr.sources[key].startswith("default")


def test_missing_patient_orientation_follows_flip_lr_option(tmp_path):
    truth = _beams_eye()
    dcm = _dicom(tmp_path / "ll.dcm", np.fliplr(truth), ViewPosition="LL")
    png = _png(tmp_path / "ll.png", truth, angle_deg=90.0)
    with pytest.warns(UserWarning, match="beam's-eye"):
        np.testing.assert_array_equal(read_xray(dcm).image, read_xray(dcm.with_suffix(".dcm")).image)
    xr = _quiet(_same, dcm, png, flip_lr=True)  # the user says how it is stored: no warning
    assert xr.sources["orientation"] == "option flip_lr (--flip-lr) = True"


# ----------------------------------------------------------------------------- contradictions


def test_contradictory_tags_and_options(tmp_path):
    truth = _beams_eye()
    pa = dict(ViewPosition="PA", PatientOrientation=["L", "F"])
    with pytest.raises(InputError, match="ViewPosition PA.*PositionerPrimaryAngle 90"):
        read_xray(_dicom(tmp_path / "a.dcm", truth, Modality="XA", ViewPosition="PA", PositionerPrimaryAngle=90.0))
    # XA at 0 is a PA: agrees with ViewPosition PA
    _quiet(
        read_xray,
        _dicom(
            tmp_path / "b.dcm",
            truth,
            Modality="XA",
            ViewPosition="PA",
            PositionerPrimaryAngle=0.0,
            PatientOrientation=["L", "F"],
        ),
    )
    with pytest.raises(InputError, match=r"PatientOrientation A\\F contradicts DICOM ViewPosition PA"):
        read_xray(_dicom(tmp_path / "c.dcm", truth, ViewPosition="PA", PatientOrientation=["A", "F"]))
    dcm = _dicom(tmp_path / "d.dcm", truth, **pa)
    with pytest.raises(InputError, match=r"--angles.*ViewPosition PA"):
        read_xray(dcm, angle_deg=0.0)
    with pytest.raises(InputError, match=r"--sdd.*DistanceSourceToDetector"):
        read_xray(dcm, sdd_mm=1800.0)
    with pytest.raises(InputError, match=r"--pixel-spacing.*ImagerPixelSpacing"):
        read_xray(dcm, pixel_spacing_mm=0.5)
    with pytest.raises(InputError, match=r"flip_lr.*False contradicts DICOM PatientOrientation L\\F"):
        read_xray(dcm, flip_lr=False)
    _quiet(read_xray, dcm, flip_lr=True, angle_deg=180.0, sdd_mm=1100.0)  # agreeing options are fine
    write_sidecar(tmp_path / "d.json", {"angle_deg": 90})
    with pytest.raises(InputError, match=r"d\.json angle_deg.*ViewPosition PA"):
        read_xray(dcm)
    write_sidecar(tmp_path / "d.json", {"angle_deg": 180, "projection": "parallel"}, force=True)
    assert _quiet(read_xray, dcm).view.projection == "parallel"  # what the tags lack may come from a sidecar
    with pytest.raises(InputError, match="PatientOrientation"):
        read_xray(_dicom(tmp_path / "e.dcm", truth, ViewPosition="AP", PatientOrientation=["L", "Q"]))
    # every error is an xfit error (the CLI prints one line)
    assert issubclass(InputError, XfitError)


def test_read_dicom_returns_the_stored_image_and_tag_geometry(tmp_path):
    truth = _beams_eye()
    image, geo = read_dicom(
        _dicom(tmp_path / "x.dcm", np.fliplr(truth), ViewPosition="PA", PatientOrientation=["L", "F"])
    )
    np.testing.assert_allclose(image, np.fliplr(truth) / 65535.0, atol=2e-6)
    assert geo == {"angle_deg": 180.0, "sdd_mm": 1100.0, "sod_mm": 700.0, "pixel_spacing_mm": [0.2, 0.3]}


# ----------------------------------------------------------------------------- the pair, and the report


def test_pa_and_left_lateral_pair_equals_png_pair_and_report_sources(tmp_path):
    from xfit.reconstruct import _report, load_inputs

    truth_pa, truth_ll = _beams_eye(), _beams_eye()[::-1].copy()
    _dicom(tmp_path / "pa.dcm", np.fliplr(truth_pa), ViewPosition="PA", PatientOrientation=["L", "F"])
    _dicom(tmp_path / "ll.dcm", np.fliplr(truth_ll), ViewPosition="LL", PatientOrientation=["P", "F"])
    pngs = [_png(tmp_path / "pa.png", truth_pa, angle_deg=180.0), _png(tmp_path / "ll.png", truth_ll, angle_deg=90.0)]
    dicom = _quiet(load_inputs, [tmp_path / "pa.dcm", tmp_path / "ll.dcm"])
    png = _quiet(load_inputs, pngs)
    assert dicom.views == png.views
    for a, b in zip(dicom.images, png.images):
        np.testing.assert_allclose(a, b, atol=2e-6, rtol=0)
    assert dicom.sources[0]["angle_deg"] == "DICOM ViewPosition PA"
    assert png.sources[1]["angle_deg"] == "ll.json angle_deg"
    assert png.sources[0]["orientation"] == "pa.json flip_lr = False"
    fit = types.SimpleNamespace(
        view_ncc=[0.9, 0.8],
        pose=None,
        history=[],
        restarts=1,
        best_restart=0,
        stopped_at=0,
        perceptual=False,
        timings={},
        views=dicom.views,
        affine=np.eye(4),
        centre_mm=[0.0, 0.0, 0.0],
        transform=None,
        residual_rms_hu=None,
        intensity_maps=None,
        data_masks=None,
        consistency=None,
    )
    rec = types.SimpleNamespace(
        fit=fit,
        inputs=dicom,
        prior_path=Path("p"),
        prior_sha256="0",
        settings={},
        seconds=0.0,
        metrics={},
        target=None,
        rois=None,
    )
    report = json.loads(json.dumps(_report(rec), default=str))
    sources = report["views"][1]["geometry_sources"]
    assert sources["angle_deg"] == "DICOM ViewPosition LL"
    assert sources["orientation"] == "DICOM PatientOrientation P\\F: columns flipped"
    assert sources["pixel_spacing_mm"].startswith("DICOM ImagerPixelSpacing")
    assert sources["projection"] == "default (cone)"


def test_tilts_that_are_not_modelled_are_warned_about(tmp_path):
    truth = _beams_eye()
    png = _png(tmp_path / "x.png", truth, angle_deg=0.0)
    # a DX column stand: PositionerPrimaryAngle is defined for C-arms only
    dcm = _dicom(
        tmp_path / "a.dcm",
        truth,
        ViewPosition="AP",
        PatientOrientation=["L", "F"],
        PositionerType="COLUMN",
        PositionerPrimaryAngle=30.0,
    )
    with pytest.warns(UserWarning, match="PositionerPrimaryAngle 30 ignored.*C-arm"):
        _same(dcm, png)
    dcm = _dicom(tmp_path / "b.dcm", truth, ViewPosition="AP", PatientOrientation=["L", "F"], DetectorPrimaryAngle=10.0)
    with pytest.warns(UserWarning, match="DetectorPrimaryAngle 10"):
        _same(dcm, png)
    # PositionerType CARM on a DX: the C-arm convention (0 = PA)
    dcm = _dicom(
        tmp_path / "c.dcm",
        np.fliplr(truth),
        PositionerType="CARM",
        PositionerPrimaryAngle=0.0,
        ViewPosition="PA",
        PatientOrientation=["L", "F"],
    )
    _quiet(_same, dcm, _png(tmp_path / "c.png", truth, angle_deg=180.0))


def test_cli_reports_a_contradiction_in_one_line(tmp_path):
    from click.testing import CliRunner

    from xfit.cli import main

    truth = _beams_eye()
    pa = _dicom(tmp_path / "pa.dcm", np.fliplr(truth), ViewPosition="PA", PatientOrientation=["L", "F"])
    ll = _dicom(tmp_path / "ll.dcm", truth, ViewPosition="LL", PatientOrientation=["A", "F"])
    res = CliRunner().invoke(main, ["reconstruct", str(pa), str(ll), "-o", str(tmp_path / "out"), "--angles", "0,90"])
    assert res.exit_code == 2, (res.output, res.exception)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip() and not ln.startswith("xfit: warning")]
    assert len(lines) == 1 and lines[0].startswith("xfit: error:"), res.stderr
    assert "--angles" in lines[0] and "ViewPosition PA" in lines[0]
    assert not (tmp_path / "out").exists()


def test_dicom_pair_reconstructs_the_same_volume_as_png_pair(tmp_path, tiny_prior_file):
    """The issue's 'done when': a PA + left-lateral pair stored with the standard display
    orientation, no option given, reconstructs what the PNG + sidecar pair does (tiny random
    prior, two steps: the fit is deterministic, so equal inputs give the equal volume)."""
    import xfit

    prior = tiny_prior_file()
    rng = np.random.default_rng(5)
    pa_truth, ll_truth = (rng.integers(0, 65536, size=(16, 16)).astype(np.uint16) for _ in range(2))
    for a in (pa_truth, ll_truth):
        a[0, 0], a[0, 1] = 0, 65535
    geo = dict(ImagerPixelSpacing=[3.0, 3.0])
    _dicom(tmp_path / "pa.dcm", np.fliplr(pa_truth), ViewPosition="PA", PatientOrientation=["L", "F"], **geo)
    _dicom(tmp_path / "ll.dcm", np.fliplr(ll_truth), ViewPosition="LL", PatientOrientation=["P", "F"], **geo)
    pngs = [
        _png(tmp_path / "pa.png", pa_truth, angle_deg=180.0, pixel_spacing_mm=[3.0, 3.0]),
        _png(tmp_path / "ll.png", ll_truth, angle_deg=90.0, pixel_spacing_mm=[3.0, 3.0]),
    ]
    kw = dict(prior=prior, steps=2, restarts=1, progress=False, seed=0)
    a = _quiet(xfit.reconstruct, [tmp_path / "pa.dcm", tmp_path / "ll.dcm"], **kw)
    b = _quiet(xfit.reconstruct, pngs, **kw)
    np.testing.assert_array_equal(a.hu, b.hu)
    assert a.inputs.views == b.inputs.views
