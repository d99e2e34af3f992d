"""Real files are messy (issue 28, point 5): pixel spacing tags of 0 or less, 8-bit JPEG exports,
inverted exports, black borders and burned-in text, and ``--target auto`` on a processed lateral
(the clinical style of xfit.radiograph). Every file is written by the test."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import assert_user_error, run
from dicom_files import beams_eye as _beams_eye
from dicom_files import write_dicom as _dicom
from PIL import Image

from xfit.errors import InputError
from xfit.io import read_image, read_image_raw, read_xray, write_nifti
from xfit.radiograph import text_bitmap

#: Geometry of the exports below (they have no sidecar): what a user gives on the command line.
GEOMETRY = dict(sdd_mm=1800.0, sod_mm=1500.0, pixel_spacing_mm=1.2)


# ----------------------------------------------------------------------------- pixel spacing tags


@pytest.mark.parametrize("tag", ["ImagerPixelSpacing", "PixelSpacing"])
@pytest.mark.parametrize("value", [[0, 0], [-0.2, 0.2], [0.2, 0.0]])
def test_a_spacing_tag_of_zero_or_less_is_refused_naming_it_unless_an_option_stands_in(tmp_path, tag, value):
    tags = dict(
        ImagerPixelSpacing=None,
        PixelSpacing=None,
        ViewPosition="AP",
        PatientOrientation=["L", "F"],
        Modality="CR",
        PhotometricInterpretation="MONOCHROME1",
    )
    tags[tag] = value
    dcm = _dicom(tmp_path / "cr.dcm", _beams_eye(), **tags)
    with pytest.raises(InputError, match=rf"{tag} \(.*not two positive numbers.*give --pixel-spacing"):
        read_xray(dcm)
    with pytest.warns(UserWarning, match=rf"{tag} .*--pixel-spacing\) used instead"):
        xr = read_xray(dcm, pixel_spacing_mm=0.15)  # the option stands in for the tag, with a warning
    assert xr.view.pixel_spacing_mm == (0.15, 0.15)
    assert np.allclose(xr.image, 1.0 - _beams_eye() / 65535.0, atol=1e-6)  # MONOCHROME1: inverted


def test_the_command_line_refuses_a_zero_spacing_tag_in_one_line(tmp_path):
    tags = dict(ImagerPixelSpacing=[0, 0], PixelSpacing=None, PatientOrientation=["L", "F"], Modality="DX")
    ap = _dicom(tmp_path / "ap.dcm", _beams_eye(), ViewPosition="AP", **tags)
    lat = _dicom(tmp_path / "lat.dcm", _beams_eye(), ViewPosition="LL", **{**tags, "PatientOrientation": ["A", "F"]})
    res = run("reconstruct", ap, lat, "-o", tmp_path / "r", "--steps", 1)
    assert_user_error(res, "ImagerPixelSpacing (0018,1164)", "--pixel-spacing")
    assert not (tmp_path / "r").exists()


# ----------------------------------------------------------------------------- exports


def _clinical_pair(tmp_path_factory) -> dict:
    """A lumbar phantom X-rayed in the clinical style, its isocentre 30 mm off the vertebra, and
    the phantom's vertebra centroids (mm, in the X-rays' frame)."""
    from scipy import ndimage

    from xfit.phantoms.model import make_phantom
    from xfit.simulate import simulate

    folder = tmp_path_factory.mktemp("clinical")
    ph = make_phantom(5001, size=(128, 112, 176), spacing_mm=2.0, level="lumbar")
    write_nifti(folder / "ct.nii.gz", ph.hu.astype(np.float32), ph.affine)
    seg = np.rint(ph.seg).astype(int)
    labels = [int(v) for v in np.unique(seg) if 0 < v < 100]
    cents = np.array(ndimage.center_of_mass(np.ones(seg.shape), seg, labels)) @ ph.affine[:3, :3].T + ph.affine[:3, 3]
    iso = np.array([12.0, -8.0, 26.0])
    sims = simulate(
        folder / "ct.nii.gz",
        [0.0, 90.0],
        folder / "xr",
        detector_shape=(220, 180),
        pixel_spacing_mm=(1.2, 1.2),
        isocenter_mm=iso,
        style="clinical",
    )
    return {"folder": folder, "pngs": [s.png for s in sims], "centroids_mm": cents - iso}


@pytest.fixture(scope="module")
def clinical_pair(tmp_path_factory):
    return _clinical_pair(tmp_path_factory)


@pytest.fixture(scope="module")
def prior():
    from xfit.prior.checkpoint import load_prior
    from xfit.reconstruct import DEFAULT_PRIOR

    return load_prior(DEFAULT_PRIOR)


def _export(png: Path, out: Path, *, border: int = 0, text: str = "", invert: bool = False, quality: int = 80) -> Path:
    """What a PACS 'export as JPEG' gives: 8 bits, optionally a black border, burned-in text
    (white, top left) and inverted grey levels."""
    img = np.rint(read_image(png) * 255).astype(np.uint8)
    img = np.pad(img, border, constant_values=0)
    if text:
        bitmap = text_bitmap(text, 14)
        img[3 : 3 + bitmap.shape[0], border + 20 : border + 20 + bitmap.shape[1]][bitmap] = 255
    if invert:
        img = 255 - img
    Image.fromarray(img).save(out, quality=quality)
    return out


def _auto(paths, prior, **kw):
    """``--target auto`` (:func:`xfit.reconstruct.locate`) on files without sidecars: the target
    and the warnings it gave."""
    from xfit.reconstruct import load_inputs, locate

    inputs = load_inputs(paths, angles=[0.0, 90.0], **GEOMETRY, **kw)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        target = locate(prior, inputs, "auto")
    return target, [str(w.message) for w in caught]


def _nearest_mm(target, pair) -> float:
    return float(np.linalg.norm(pair["centroids_mm"] - target.point_mm, axis=1).min())


def test_an_8_bit_jpeg_export_reads_like_the_png(clinical_pair, tmp_path):
    png = clinical_pair["pngs"][1]
    jpg = _export(png, tmp_path / "lat.jpg")
    raw, bits = read_image_raw(jpg)
    assert bits == 8 and raw.dtype == np.uint8
    xr = read_xray(jpg, angle_deg=90.0, **GEOMETRY)
    assert xr.line_integral_scale is None and xr.view.shape == (220, 180)
    assert np.abs(xr.image - read_xray(png).image).mean() < 0.02  # 8 bits and JPEG's loss: small


def test_target_auto_finds_a_vertebra_on_processed_radiographs(clinical_pair, prior, tmp_path):
    target, warned = _auto(clinical_pair["pngs"], prior)
    assert _nearest_mm(target, clinical_pair) < 10.0 and not warned, warned
    # 8-bit JPEG exports with black borders and burned-in text: still found
    exports = [
        _export(p, tmp_path / f"{p.stem}.jpg", border=12, text=t) for p, t in zip(clinical_pair["pngs"], ("AP", "LAT"))
    ]
    target, warned = _auto(exports, prior)
    assert _nearest_mm(target, clinical_pair) < 10.0 and not warned, warned


def test_an_inverted_export_is_flagged_and_read_right_with_invert(clinical_pair, prior, tmp_path):
    exports = [_export(p, tmp_path / f"{p.stem}.jpg", invert=True) for p in clinical_pair["pngs"]]
    target, warned = _auto(exports, prior)
    assert any("inverted" in w and "--invert" in w for w in warned), warned
    target, warned = _auto(exports, prior, invert=True)
    assert _nearest_mm(target, clinical_pair) < 10.0 and not warned, warned
