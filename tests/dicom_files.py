"""DICOM radiographs written by pydicom for the tests (tests/io/test_dicom.py and the tests that
feed DICOM files to the command line)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

ROWS, COLS = 6, 8


def beams_eye() -> np.ndarray:
    """The image the fit should see (beam's-eye view), 16-bit, spanning 0..65535."""
    rng = np.random.default_rng(17)
    img = rng.integers(1, 65535, size=(ROWS, COLS)).astype(np.uint16)
    img[0, 0], img[-1, 1] = 0, 65535  # min-max normalization of the DICOM == PNG / 65535
    return img


def write_dicom(path: Path, pixels: np.ndarray, **tags) -> Path:
    """A single-frame DICOM radiograph; a tag given as None is left out."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    base = dict(
        Modality="DX",
        PhotometricInterpretation="MONOCHROME2",
        DistanceSourceToDetector=1100.0,
        DistanceSourceToPatient=700.0,
        ImagerPixelSpacing=[0.2, 0.3],
    )
    base.update(tags)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    for key, value in base.items():
        if value is not None:
            setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(pixels).astype("<u2").tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path
