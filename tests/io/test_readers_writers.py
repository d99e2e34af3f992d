"""Tests of xfit.io: NIfTI, images, sidecars, X-rays (PNG and DICOM), atomic writes."""

import gzip
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from xfit.errors import GeometryError, InputError, OutputExistsError
from xfit.geometry import View
from xfit.io import (
    Volume,
    XRay,
    atomic_write,
    portable_path,
    prepare_output_dir,
    read_dicom,
    read_image,
    read_image_raw,
    read_nifti,
    read_sidecar,
    read_xray,
    resample,
    sidecar_path,
    write_nifti,
    write_png8,
    write_png16,
    write_sidecar,
    write_xray,
)


def _world(affine: np.ndarray, ijk) -> np.ndarray:
    return affine[:3, :3] @ np.asarray(ijk, dtype=np.float64) + affine[:3, 3]


def _lps_affine(spacing=(0.8, 0.9, 1.5)) -> np.ndarray:
    """DICOM-like LPS voxel axes: i -> left (-x), j -> posterior (-y), k -> superior (+z)."""
    a = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    a[:3, 3] = (40.0, 30.0, -20.0)
    return a


# ----------------------------------------------------------------------------- NIfTI


def test_nifti_round_trip_ras(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(5, 6, 7)).astype(np.float32) * 500
    aff = np.diag([0.5, 0.6, 2.0, 1.0])
    aff[:3, 3] = (-10, 5, 3)
    path = write_nifti(tmp_path / "ct.nii.gz", data, aff)
    vol = read_nifti(path)
    assert isinstance(vol, Volume) and vol.data.dtype == np.float32 and vol.affine.dtype == np.float64
    np.testing.assert_allclose(vol.data, data, rtol=1e-6)
    np.testing.assert_allclose(vol.affine, aff)
    assert vol.spacing_mm == pytest.approx((0.5, 0.6, 2.0))
    assert vol.shape == (5, 6, 7)
    assert not list(tmp_path.glob(".*tmp*"))


def test_nifti_lps_is_reoriented_keeping_world_position(tmp_path):
    data = np.zeros((6, 7, 8), np.float32)
    data[1, 2, 3] = 100.0
    aff = _lps_affine()
    write_nifti(tmp_path / "lps.nii", data, aff)
    vol = read_nifti(tmp_path / "lps.nii")
    assert nib.aff2axcodes(vol.affine) == ("R", "A", "S")
    assert np.all(np.diag(vol.affine)[:3] > 0)
    ijk = np.argwhere(vol.data == 100.0)
    assert ijk.shape == (1, 3)
    assert tuple(ijk[0]) == (6 - 1 - 1, 7 - 1 - 2, 3)
    np.testing.assert_allclose(_world(vol.affine, ijk[0]), _world(aff, (1, 2, 3)), atol=1e-9)


def test_nifti_labels_int16_and_torch_input(tmp_path):
    labels = torch.zeros(4, 4, 4, dtype=torch.int64)
    labels[1:3, 1:3, 1:3] = 7
    write_nifti(tmp_path / "labels.nii.gz", labels, torch.eye(4))
    img = nib.load(str(tmp_path / "labels.nii.gz"))
    assert img.get_data_dtype() == np.int16
    vol = read_nifti(tmp_path / "labels.nii.gz", dtype=np.int16)
    assert vol.data.dtype == np.int16 and int(vol.data.sum()) == 7 * 8


def test_nifti_trailing_singleton_is_squeezed(tmp_path):
    nib.save(nib.Nifti1Image(np.ones((3, 4, 5, 1), np.float32), np.eye(4)), str(tmp_path / "v4.nii"))
    assert read_nifti(tmp_path / "v4.nii").shape == (3, 4, 5)


def test_nifti_constant_volume_allowed(tmp_path):
    nib.save(nib.Nifti1Image(np.full((3, 3, 3), -1000, np.float32), np.eye(4)), str(tmp_path / "c.nii"))
    assert float(read_nifti(tmp_path / "c.nii").data.mean()) == -1000.0


def _bad_nifti(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.nii.gz"
    if kind == "missing":
        return path
    if kind == "garbage":
        path.write_bytes(b"this is not a nifti file at all" * 20)
    elif kind == "truncated":
        nib.save(nib.Nifti1Image(np.zeros((20, 20, 20), np.float32), np.eye(4)), str(path))
        raw = gzip.decompress(path.read_bytes())
        path.write_bytes(gzip.compress(raw[: len(raw) // 3]))
    elif kind == "2d":
        nib.save(nib.Nifti1Image(np.zeros((4, 5), np.float32), np.eye(4)), str(path))
    elif kind == "4d":
        nib.save(nib.Nifti1Image(np.zeros((4, 5, 6, 2), np.float32), np.eye(4)), str(path))
    elif kind in ("nan", "inf"):
        data = np.zeros((4, 4, 4), np.float32)
        data[1, 1, 1] = np.nan if kind == "nan" else np.inf
        nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    elif kind == "empty":
        nib.save(nib.Nifti1Image(np.zeros((0, 4, 4), np.float32), np.eye(4)), str(path))
    return path


@pytest.mark.parametrize(
    "kind,reason",
    [
        ("missing", "not found"),
        ("garbage", "cannot read"),
        ("truncated", "cannot read"),
        ("2d", "3D"),
        ("4d", "3D"),
        ("nan", "NaN"),
        ("inf", "infinite"),
        ("empty", "empty"),
    ],
)
def test_read_nifti_errors_name_the_file(tmp_path, kind, reason):
    path = _bad_nifti(tmp_path, kind)
    with pytest.raises(InputError, match=rf"{kind}\.nii\.gz.*{reason}"):
        read_nifti(path)


def test_write_nifti_refuses_overwrite(tmp_path):
    path = write_nifti(tmp_path / "a.nii.gz", np.zeros((2, 2, 2)), np.eye(4))
    with pytest.raises(OutputExistsError, match="--force"):
        write_nifti(path, np.ones((2, 2, 2)), np.eye(4))
    assert read_nifti(path).data.max() == 0
    write_nifti(path, np.ones((2, 2, 2)), np.eye(4), force=True)
    assert read_nifti(path).data.max() == 1
    with pytest.raises(InputError):
        write_nifti(tmp_path / "b.nii", np.zeros((2, 2)), np.eye(4))


# ----------------------------------------------------------------------------- resample


def _blob_volume(affine: np.ndarray, shape=(40, 36, 30)) -> Volume:
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(np.float64)
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    centre = np.array([3.0, -4.0, 6.0])
    r2 = ((world - centre) ** 2).sum(-1)
    data = np.where(r2 < 8.0**2, 1000.0, -1000.0).astype(np.float32)
    return Volume(data=data, affine=affine)


def _centroid_mm(vol: Volume, threshold=0.0) -> np.ndarray:
    ijk = np.argwhere(vol.data > threshold).astype(np.float64)
    w = vol.data[vol.data > threshold].astype(np.float64) + 1000.0
    return _world(vol.affine, (ijk * w[:, None]).sum(0) / w.sum())


@pytest.mark.parametrize("spacing", [1.0, 2.5, (1.2, 0.7, 2.0)])
def test_resample_keeps_world_position_and_spacing(spacing):
    aff = np.diag([0.8, 0.9, 1.5, 1.0])
    aff[:3, 3] = (-15.0, -20.0, -15.0)
    vol = _blob_volume(aff)
    out = resample(vol, spacing)
    expect = np.broadcast_to(np.asarray(spacing, float), (3,))
    assert out.spacing_mm == pytest.approx(tuple(expect))
    np.testing.assert_allclose(out.centre_mm, vol.centre_mm, atol=1e-9)
    extent_in = np.array(vol.shape) * np.array(vol.spacing_mm)
    extent_out = np.array(out.shape) * np.array(out.spacing_mm)
    assert np.all(np.abs(extent_out - extent_in) <= np.array(out.spacing_mm) / 2 + 1e-9)
    np.testing.assert_allclose(_centroid_mm(out), _centroid_mm(vol), atol=0.35)
    assert out.data.dtype == np.float32


def test_resample_labels_nearest_and_forced_shape():
    aff = _lps_affine((1.0, 1.0, 1.0))
    labels = np.zeros((10, 10, 10), np.int16)
    labels[4:7, 4:7, 4:7] = 3
    vol = Volume(labels, aff)
    out = resample(vol, 0.5, order=0, cval=0)
    assert out.data.dtype == np.int16 and set(np.unique(out.data)) == {0, 3}
    padded = resample(Volume(np.zeros((10, 10, 10), np.float32), aff), 1.0, shape=(16, 10, 4))
    assert padded.shape == (16, 10, 4)
    np.testing.assert_allclose(padded.centre_mm, vol.centre_mm, atol=1e-9)
    # 3 voxels each side of the I axis fall outside the input: filled with the HU of air
    assert np.all(padded.data[:3] == -1000) and np.all(padded.data[-3:] == -1000)
    assert np.all(padded.data[3:-3] == 0)
    # directions are kept (LPS input stays LPS)
    assert np.sign(np.diag(padded.affine)[:3]).tolist() == [-1, -1, 1]


def test_resample_errors():
    vol = Volume(np.zeros((4, 4, 4), np.float32), np.eye(4))
    for bad in (0.0, -1.0, (1.0, 2.0), float("nan")):
        with pytest.raises(InputError):
            resample(vol, bad)
    with pytest.raises(InputError):
        resample(vol, 1.0, shape=(4, 0, 4))


# ----------------------------------------------------------------------------- atomic writes


def test_atomic_write_cleans_up_on_exception(tmp_path):
    target = tmp_path / "out.nii.gz"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            assert tmp.parent == tmp_path and tmp.name.endswith(".nii.gz") and tmp != target
            tmp.write_bytes(b"partial")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_no_overwrite_without_force(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(OutputExistsError):
        with atomic_write(target) as tmp:
            tmp.write_text("new")
    assert target.read_text() == "old"
    with atomic_write(target, force=True) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_prepare_output_dir(tmp_path):
    out = prepare_output_dir(tmp_path / "a" / "b")
    assert out.is_dir()
    assert prepare_output_dir(out) == out  # empty folder is fine
    (out / "recon.nii.gz").write_bytes(b"x")
    with pytest.raises(OutputExistsError, match="--force"):
        prepare_output_dir(out)
    assert prepare_output_dir(out, force=True) == out
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputExistsError):
        prepare_output_dir(tmp_path / "file", force=True)


# ----------------------------------------------------------------------------- images


def test_png_8_and_16_bit(tmp_path):
    g16 = np.array([[0, 1000, 65535], [30000, 2, 12345]], np.uint16)
    write_png16(tmp_path / "a16.png", g16)
    raw, bits = read_image_raw(tmp_path / "a16.png")
    assert bits == 16 and raw.dtype == np.uint16
    np.testing.assert_array_equal(raw, g16)
    np.testing.assert_allclose(read_image(tmp_path / "a16.png"), g16 / 65535.0, rtol=1e-6)
    g8 = np.array([[0, 128, 255]], np.uint8)
    write_png8(tmp_path / "a8.png", g8)
    img = read_image(tmp_path / "a8.png")
    assert img.dtype == np.float32 and img.shape == (1, 3)
    np.testing.assert_allclose(img, g8 / 255.0, rtol=1e-6)
    with pytest.raises(OutputExistsError):
        write_png8(tmp_path / "a8.png", g8)
    with pytest.raises(InputError):
        write_png16(tmp_path / "b.png", g8)


def test_rgb_png_to_luminance(tmp_path):
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[1, 1] = (255, 255, 255)
    write_png8(tmp_path / "rgb.png", rgb)
    img = read_image(tmp_path / "rgb.png")
    assert img.shape == (2, 2)
    assert img[0, 0] == pytest.approx(76 / 255, abs=1e-6)
    assert img[1, 1] == pytest.approx(1.0)


def test_jpeg_grayscale(tmp_path):
    Image.fromarray(np.full((8, 8), 200, np.uint8)).save(tmp_path / "a.jpg")
    assert read_image(tmp_path / "a.jpg").mean() == pytest.approx(200 / 255, abs=2 / 255)


@pytest.mark.parametrize("dtype,scale", [(np.uint8, 255.0), (np.uint16, 65535.0)])
def test_tiff(tmp_path, dtype, scale):
    import tifffile

    arr = (np.arange(20).reshape(4, 5) * 11).astype(dtype)
    tifffile.imwrite(tmp_path / "a.tif", arr)
    np.testing.assert_allclose(read_image(tmp_path / "a.tif"), arr / scale, rtol=1e-6)
    Image.fromarray(arr).save(tmp_path / "b.tiff")  # written by Pillow
    np.testing.assert_allclose(read_image(tmp_path / "b.tiff"), arr / scale, rtol=1e-6)


def test_image_errors(tmp_path):
    import tifffile

    with pytest.raises(InputError, match="nope.png"):
        read_image(tmp_path / "nope.png")
    (tmp_path / "junk.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(InputError, match="junk.png"):
        read_image(tmp_path / "junk.png")
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((5, 4, 6), np.uint16))
    with pytest.raises(InputError, match="stack"):
        read_image(tmp_path / "stack.tif")
    frames = [Image.fromarray(np.zeros((4, 4), np.uint8)) for _ in range(3)]
    frames[0].save(tmp_path / "multi.tiff", save_all=True, append_images=frames[1:])
    with pytest.raises(InputError, match="multi"):
        read_image(tmp_path / "multi.tiff")


# ----------------------------------------------------------------------------- sidecars


def test_sidecar_round_trip_and_errors(tmp_path):
    assert sidecar_path(tmp_path / "ap.png") == tmp_path / "ap.json"
    data = {"angle_deg": np.float32(90.0), "pixel_spacing_mm": (0.5, 0.5), "flip_lr": False}
    write_sidecar(tmp_path / "ap.json", data)
    assert read_sidecar(tmp_path / "ap.json") == {"angle_deg": 90.0, "pixel_spacing_mm": [0.5, 0.5], "flip_lr": False}
    assert "\n  " in (tmp_path / "ap.json").read_text()  # pretty
    with pytest.raises(OutputExistsError):
        write_sidecar(tmp_path / "ap.json", data)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(InputError, match="bad.json"):
        read_sidecar(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="list.json"):
        read_sidecar(tmp_path / "list.json")
    with pytest.raises(InputError, match="missing.json"):
        read_sidecar(tmp_path / "missing.json")


# ----------------------------------------------------------------------------- X-rays


def _drr(shape=(24, 32)) -> np.ndarray:
    rr, cc = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    return (3.0 * np.exp(-((rr - 10) ** 2 + (cc - 8) ** 2) / 30.0) + 0.01 * cc).astype(np.float32)


@pytest.mark.parametrize("as_tensor", [False, True])
def test_write_read_xray_round_trip(tmp_path, as_tensor):
    p = _drr()
    view = View(90.0, sdd_mm=1200, sod_mm=800, shape=p.shape, pixel_spacing_mm=(0.4, 0.6))
    scale = write_xray(tmp_path / "lat.png", torch.from_numpy(p) if as_tensor else p, view)
    assert scale == 10.0  # max(10, ceil(1.05 * max p))
    side = json.loads((tmp_path / "lat.json").read_text())
    assert side["line_integral_scale"] == 10.0 and side["angle_deg"] == 90.0
    raw, bits = read_image_raw(tmp_path / "lat.png")
    assert bits == 16 and raw.max() > 15000  # bright = attenuating
    xr = read_xray(tmp_path / "lat.png")
    assert isinstance(xr, XRay) and xr.line_integral_scale == 10.0 and xr.path == tmp_path / "lat.png"
    assert xr.view == view
    assert np.abs(xr.image - p).max() <= 0.5 * scale / 65535 + 1e-6
    # command-line overrides win over the sidecar
    assert read_xray(tmp_path / "lat.png", angle_deg=80.0, sod_mm=900).view.angle_deg == 80.0


def test_write_xray_scale_and_errors(tmp_path):
    p = _drr() * 10  # max ~30 -> scale ceil(1.05 * max)
    view = View(0.0, shape=p.shape, pixel_spacing_mm=0.5)
    scale = write_xray(tmp_path / "ap.png", p, view)
    assert scale == float(np.ceil(p.max() * 1.05))
    with pytest.raises(OutputExistsError):
        write_xray(tmp_path / "ap.png", p, view)
    (tmp_path / "ap2.json").write_text("{}")  # sidecar exists -> nothing written
    with pytest.raises(OutputExistsError):
        write_xray(tmp_path / "ap2.png", p, view)
    assert not (tmp_path / "ap2.png").exists()
    with pytest.raises(GeometryError):
        write_xray(tmp_path / "x.png", p[:, :-1], view)
    # values above the given scale are clipped to 65535
    write_xray(tmp_path / "clip.png", p, view, line_integral_scale=5.0)
    assert read_image_raw(tmp_path / "clip.png")[0].max() == 65535


def test_read_xray_flip_lr_and_invert(tmp_path):
    p = _drr()
    view = View(0.0, shape=p.shape, pixel_spacing_mm=0.5)
    write_xray(tmp_path / "ap.png", p, view, line_integral_scale=4.0)
    ref = read_xray(tmp_path / "ap.png").image
    flipped = read_xray(tmp_path / "ap.png", flip_lr=True).image
    np.testing.assert_array_equal(flipped, ref[:, ::-1])
    # a sidecar saying the stored image is mirrored is honoured too
    side = read_sidecar(tmp_path / "ap.json")
    mirrored = np.fliplr(read_image_raw(tmp_path / "ap.png")[0])
    write_png16(tmp_path / "m.png", np.ascontiguousarray(mirrored))
    write_sidecar(tmp_path / "m.json", {**side, "flip_lr": True})
    np.testing.assert_array_equal(read_xray(tmp_path / "m.png").image, ref)
    # invert: bone-dark 8-bit image without scale
    dark = (255 - np.rint(255 * p / 4.0)).astype(np.uint8)
    write_png8(tmp_path / "dark.png", dark)
    xr = read_xray(tmp_path / "dark.png", angle_deg=0.0, pixel_spacing_mm=0.5, invert=True)
    assert xr.line_integral_scale is None
    np.testing.assert_allclose(xr.image, p / 4.0, atol=1 / 255)
    assert xr.view.sdd_mm == 1800.0 and xr.view.sod_mm == 1500.0 and xr.view.shape == p.shape


def test_read_xray_geometry_errors(tmp_path):
    write_png8(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(GeometryError, match="angle"):
        read_xray(tmp_path / "a.png", pixel_spacing_mm=0.5)
    with pytest.raises(GeometryError, match="pixel spacing"):
        read_xray(tmp_path / "a.png", angle_deg=0.0)
    with pytest.raises(GeometryError):
        read_xray(tmp_path / "a.png", angle_deg=0.0, pixel_spacing_mm=0.5, sod_mm=2000)
    write_sidecar(tmp_path / "a.json", {"angle_deg": 0, "pixel_spacing_mm": [1, 1], "typo_key": 1})
    with pytest.raises(GeometryError, match="typo_key"):
        read_xray(tmp_path / "a.png")
    with pytest.raises(InputError):
        read_xray(tmp_path / "none.png", angle_deg=0.0, pixel_spacing_mm=0.5)


# ----------------------------------------------------------------------------- DICOM


def _write_dicom(path: Path, pixels: np.ndarray, *, photometric="MONOCHROME2", slope=1.0, intercept=0.0, geometry=True):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # digital X-ray
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    if geometry:
        ds.DistanceSourceToDetector = 1100.0
        ds.DistanceSourceToPatient = 700.0
        ds.ImagerPixelSpacing = [0.2, 0.3]
        ds.PositionerType = "CARM"
        ds.PositionerPrimaryAngle = 30.0  # LAO 30 -> theta = 180 - 30
        ds.PatientOrientation = ["R", "F"]  # beam's-eye view of theta 150: no flip
    ds.PixelData = pixels.astype("<u2").tobytes()
    ds.save_as(str(path), enforce_file_format=True)


def test_dicom_geometry_and_pixels(tmp_path):
    pixels = np.array([[0, 100, 200], [300, 400, 1000]], np.uint16)
    _write_dicom(tmp_path / "x.dcm", pixels, slope=2.0, intercept=-50.0)
    image, geo = read_dicom(tmp_path / "x.dcm")
    assert geo == {"sdd_mm": 1100.0, "sod_mm": 700.0, "angle_deg": 150.0, "pixel_spacing_mm": [0.2, 0.3]}
    np.testing.assert_allclose(image, pixels / 1000.0, atol=1e-6)
    xr = read_xray(tmp_path / "x.dcm")
    assert xr.view.angle_deg == 150.0 and xr.view.sdd_mm == 1100.0 and xr.view.sod_mm == 700.0
    assert xr.view.pixel_spacing_mm == (0.2, 0.3) and xr.view.shape == (2, 3)
    assert xr.line_integral_scale is None
    np.testing.assert_allclose(xr.image, pixels / 1000.0, atol=1e-6)
    # an option that agrees is fine, one that contradicts the tags is an error naming them;
    # detection by content works without the .dcm suffix
    os.replace(tmp_path / "x.dcm", tmp_path / "x.img")
    assert read_xray(tmp_path / "x.img", angle_deg=150.0).view.angle_deg == 150.0
    with pytest.raises(InputError, match="PositionerPrimaryAngle"):
        read_xray(tmp_path / "x.img", angle_deg=0.0)


def test_dicom_monochrome1_is_inverted(tmp_path):
    pixels = np.array([[0, 500, 1000]], np.uint16)
    _write_dicom(tmp_path / "m1.dcm", pixels, photometric="MONOCHROME1", geometry=False)
    with pytest.warns(UserWarning, match="no PatientOrientation"):
        xr = read_xray(tmp_path / "m1.dcm", angle_deg=90.0, pixel_spacing_mm=0.15)
    np.testing.assert_allclose(xr.image, [[1.0, 0.5, 0.0]], atol=1e-6)
    assert xr.view.sdd_mm == 1800.0 and xr.view.sod_mm == 1500.0


def test_dicom_unreadable(tmp_path):
    (tmp_path / "bad.dcm").write_bytes(b"not dicom")
    with pytest.raises(InputError, match="bad.dcm"):
        read_xray(tmp_path / "bad.dcm", angle_deg=0.0, pixel_spacing_mm=0.5)


# ----------------------------------------------------------------------------- issue 12


def test_atomic_write_names_the_final_path_on_os_errors(tmp_path, monkeypatch):
    import errno

    from xfit.errors import OutputError

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OutputError, match=r"out\.txt: No space left on device"):
        with atomic_write(tmp_path / "out.txt") as tmp:
            tmp.write_text("x")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []  # the temporary file is gone


def test_image_larger_than_a_detector_is_refused_before_decoding(tmp_path):
    Image.new("L", (9000, 4)).save(tmp_path / "wide.png")
    with pytest.raises(InputError, match="too large"):
        read_image(tmp_path / "wide.png")


def test_check_output_file_and_path(tmp_path):
    from xfit.errors import OutputError
    from xfit.io import check_output_file, check_output_path

    assert check_output_file(tmp_path / "new" / "r.json") == (tmp_path / "new" / "r.json").resolve()
    (tmp_path / "r.json").write_text("{}")
    with pytest.raises(OutputExistsError):
        check_output_file(tmp_path / "r.json")
    assert check_output_file(tmp_path / "r.json", force=True)
    with pytest.raises(OutputError, match="folder"):
        check_output_file(tmp_path)
    assert check_output_path(tmp_path) == tmp_path.resolve()  # an existing run folder is fine
    with pytest.raises(OutputError, match="file, not a folder"):
        check_output_path(tmp_path / "r.json" / "run")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".xfit-probe")]


def test_atomic_write_gives_normal_permissions(tmp_path):
    """safetensors creates files readable by the owner only; atomic_write hands over 0666 - umask."""
    import os

    import torch
    from safetensors.torch import save_file

    from xfit.io import atomic_write

    p = tmp_path / "x.safetensors"
    with atomic_write(p) as tmp:
        save_file({"a": torch.zeros(2)}, str(tmp))
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(p).st_mode & 0o777 == 0o666 & ~mask


# ----------------------------------------------------------------------------- the package (issue 30)


def test_each_io_function_has_one_home_and_the_old_names_still_import():
    """xfit.io is a package of one module per job: no function or class is defined in two of its
    modules, and every name ``from xfit.io import`` gave before the split is re-exported."""
    import ast

    import xfit.io

    homes: dict[str, list[str]] = {}
    for path in sorted(Path(xfit.io.__file__).parent.glob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                homes.setdefault(node.name, []).append(path.name)
    assert {k: v for k, v in homes.items() if len(v) > 1} == {}
    before = (
        "DEFAULT_SDD_MM DEFAULT_SOD_MM LOCK_NAME MAX_SMALL_FILE_BYTES MU_WATER Volume XRay atomic_folder "
        "atomic_write check_device check_output_file check_output_folder check_output_path crop_centred "
        "crop_start finite_json folder_lock held_lock holder_text hu_to_mu mu_to_hu parse_json_strict "
        "prepare_output_dir read_dicom read_image read_image_raw read_nifti read_pixels read_sidecar read_xray "
        "read_yaml_mapping resample resample_onto sidecar_path stored_to_image write_nifti write_png16 "
        "write_png8 write_radiograph write_sidecar write_xray"
    ).split()
    assert [n for n in before if not hasattr(xfit.io, n)] == []
    assert sorted(xfit.io.__all__) == sorted(set(xfit.io.__all__)) and set(before) <= set(xfit.io.__all__)
    assert xfit.io.read_xray.__module__ == "xfit.io.xray" and xfit.io.Volume.__module__ == "xfit.io.volumes"


def test_portable_path_names_no_machine_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    inside = tmp_path / "xfit" / "data" / "prior-64.safetensors"
    assert portable_path(inside) == "xfit/data/prior-64.safetensors"
    assert portable_path("run/prior.safetensors") == "run/prior.safetensors"  # as given
    outside = tmp_path.parent / "elsewhere.safetensors"
    assert portable_path(outside) == str(outside)  # outside the checkout: the only name it has
