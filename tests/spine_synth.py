"""Tiny synthetic spine CTs with VerSe label maps, written in the layouts xfit reads.

Not a phantom generator: a body cylinder of soft tissue with air around it and one ellipsoid
"vertebra" (a cortical shell over trabecular bone) per level stacked along z, each labelled with
its VerSe number. Enough to test the loaders' geometry and bookkeeping cheaply.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from xfit.levels import level_label

GAP_MM = 28.0  # centre-to-centre distance of neighbouring vertebrae


def spine_volume(
    shape: Sequence[int],
    spacing: Sequence[float],
    centre_level: str,
    levels: Sequence[str],
    *,
    seed: int = 0,
    centre_vox: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HU ``float32``, VerSe labels ``int16`` and a RAS affine with ``centre_level``'s centroid
    at ``centre_vox`` (default: the grid centre), its neighbours ``GAP_MM`` apart along +z
    (cranial levels above)."""
    shape = tuple(int(s) for s in shape)
    sp = np.asarray(spacing, dtype=np.float64)
    c = np.asarray([(n - 1) / 2 for n in shape] if centre_vox is None else centre_vox, dtype=np.float64)
    affine = np.diag([*sp, 1.0])
    affine[:3, 3] = -sp * c  # the centred vertebra's centroid at world (0, 0, 0)
    ii, jj, kk = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    x, y, z = (ii - c[0]) * sp[0], (jj - c[1]) * sp[1], (kk - c[2]) * sp[2]
    rng = np.random.default_rng(seed)
    hu = np.full(shape, -1000.0, np.float32)
    body = x**2 + y**2 < 38.0**2
    hu[body] = 40.0
    seg = np.zeros(shape, np.int16)
    order = list(levels)
    ci = order.index(centre_level)
    for n, name in enumerate(order):
        zc = (ci - n) * GAP_MM  # cranial (earlier in the list) is superior
        r = (x / 14.0) ** 2 + (y / 12.0) ** 2 + ((z - zc) / 10.0) ** 2
        inside = r <= 1.0
        seg[inside] = level_label(name)
        hu[inside] = np.where(r[inside] > 0.6, 900.0, 200.0)
    hu += rng.normal(0, 5, shape).astype(np.float32) * body
    return hu.astype(np.float32), seg, affine


def write_nifti(
    path: Path, data: np.ndarray, affine: np.ndarray, *, slope: float | None = None, inter: float = 0.0, dtype=None
) -> Path:
    img = nib.Nifti1Image(np.asarray(data if dtype is None else data.astype(dtype)), affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    if slope is not None:
        img.header.set_slope_inter(slope, inter)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def write_xfit_case(
    folder: Path,
    n: int,
    *,
    size: int = 32,
    spacing: float = 2.5,
    centre_level: str = "L1",
    levels: Sequence[str] = ("T12", "L1", "L2"),
    fov: Sequence[int] | None = None,
    seed: int = 0,
    suffix: str = ".nii.gz",
) -> Path:
    """One case in the ``xfit phantoms`` format: ``caseNNNN_ct``, ``_seg``, ``_tissue``, ``.json``."""
    shape = tuple(fov) if fov is not None else (size,) * 3
    hu, seg, affine = spine_volume(shape, (spacing,) * 3, centre_level, levels, seed=seed + n)
    stem = folder / f"case{n:04d}"
    write_nifti(Path(f"{stem}_ct{suffix}"), hu, affine)
    write_nifti(Path(f"{stem}_seg{suffix}"), seg, affine)
    write_nifti(Path(f"{stem}_tissue{suffix}"), (hu > 0).astype(np.int16) + 1, affine)  # must be ignored
    Path(f"{stem}.json").write_text(
        json.dumps({"centre_level": centre_level, "centre_label": level_label(centre_level)})
    )
    return Path(f"{stem}_ct{suffix}")


def write_xfit_collection(folder: Path, n: int, **kw) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    centres = kw.pop("centres", None)
    for i in range(n):
        c = centres[i % len(centres)] if centres else kw.get("centre_level", "L1")
        lv = kw.get("levels", ("T12", "L1", "L2"))
        write_xfit_case(folder, i, **{**kw, "centre_level": c, "levels": lv})
    return folder


# ----------------------------------------------------------------------------- public layouts

TS_V1 = {
    18 + n: lev
    for n, lev in enumerate(
        ["L5", "L4", "L3", "L2", "L1"] + [f"T{i}" for i in range(12, 0, -1)] + [f"C{i}" for i in range(7, 0, -1)]
    )
}
TS_V2 = {
    27 + n: lev
    for n, lev in enumerate(
        ["L5", "L4", "L3", "L2", "L1"] + [f"T{i}" for i in range(12, 0, -1)] + [f"C{i}" for i in range(7, 0, -1)]
    )
}


def caret_label_table(table: dict[int, str]) -> bytes:
    """The XML TotalSegmentator v2 puts in a multilabel file's NIfTI extension (code 0)."""
    body = "".join(
        f'<Label Key="{k}" Red="1" Green="0" Blue="0" Alpha="1"><![CDATA[{v}]]></Label>\n' for k, v in table.items()
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?> <CaretExtension> <VolumeInformation Index="0"> '
        f"<LabelTable>\n{body}</LabelTable> <VolumeType><![CDATA[Label]]></VolumeType> "
        "</VolumeInformation></CaretExtension>"
    ).encode()


def write_layout(
    root: Path,
    layout: str,
    n: int,
    *,
    size: int = 32,
    spacing: float = 2.5,
    levels: Sequence[str] = ("T12", "L1", "L2"),
    centres: Sequence[str] = ("L1",),
    seed: int = 0,
    ts_mode: str = "folders",
) -> Path:
    """Write ``n`` cases in a public layout: ``verse``, ``ctspine1k`` or ``totalsegmentator``
    (``ts_mode``: ``folders`` (one file per structure), ``ml-header`` (v2 multilabel with its label
    table), ``ml-v1`` (v1 multilabel, no table))."""
    for i in range(n):
        c = centres[i % len(centres)]
        hu, seg, aff = spine_volume((size,) * 3, (spacing,) * 3, c, levels, seed=seed + i)
        if layout == "verse":
            sub = f"sub-verse{500 + i:03d}"
            tag = "_dir-ax" if i % 2 else ""
            write_nifti(root / "01_training" / "rawdata" / sub / f"{sub}{tag}_ct.nii.gz", hu, aff)
            d = root / "01_training" / "derivatives" / sub
            write_nifti(d / f"{sub}{tag}_seg-vert_msk.nii.gz", seg, aff)
            (d / f"{sub}{tag}_seg-subreg_ctd.json").write_text(json.dumps([{"direction": ["P", "I", "R"]}]))
        elif layout == "ctspine1k":
            src = ["COLONOG", "HNSCC-3DCT-RT"][i % 2]
            write_nifti(root / "volumes" / src / f"1.3.6.1.4.1.9328.50.4.{i:04d}.nii.gz", hu, aff)
            write_nifti(root / "labels" / src / f"1.3.6.1.4.1.9328.50.4.{i:04d}_seg.nii.gz", seg, aff)
        elif layout == "totalsegmentator":
            s = root / f"s{i:04d}"
            write_nifti(s / "ct.nii.gz", hu, aff)
            if ts_mode == "folders":
                for lev in levels:
                    write_nifti(
                        s / "segmentations" / f"vertebrae_{lev}.nii.gz", (seg == level_label(lev)).astype(np.uint8), aff
                    )
                write_nifti(s / "segmentations" / "spleen.nii.gz", np.zeros_like(seg, np.uint8), aff)
            else:
                table = TS_V2 if ts_mode == "ml-header" else TS_V1
                to_file = {level_label(v): k for k, v in table.items()}
                ml = np.zeros_like(seg, np.uint8)
                for lab in np.unique(seg[seg > 0]):
                    ml[seg == lab] = to_file[int(lab)]
                ml[(hu < -500) & (seg == 0)] = 0
                ml[(np.abs(hu - 40) < 30) & (seg == 0)] = 1  # "spleen": a non-vertebra class
                img = nib.Nifti1Image(ml, aff)
                if ts_mode == "ml-header":
                    names = {1: "spleen", **{k: f"vertebrae_{v}" for k, v in TS_V2.items()}, 26: "vertebrae_S1"}
                    img.header.extensions.append(nib.nifti1.Nifti1Extension(0, caret_label_table(names)))
                s.mkdir(parents=True, exist_ok=True)
                nib.save(img, str(s / "segmentations.nii.gz"))
        else:
            raise ValueError(layout)
    return root


def synthetic_crops(n: int = 2, seed: int = 0) -> torch.Tensor:
    """Synthetic crops ``[n, 2, 16, 16, 16]``: a bright ellipsoid (and its mask) in soft tissue."""
    g = torch.Generator().manual_seed(seed)
    ax = torch.linspace(-1, 1, 16)
    x, y, z = torch.meshgrid(ax, ax, ax, indexing="ij")
    out = []
    for _ in range(n):
        a, b, c = (0.3 + 0.3 * torch.rand(3, generator=g)).tolist()
        inside = (x / a) ** 2 + (y / b) ** 2 + (z / c) ** 2 < 1
        vol = torch.where(inside, torch.tensor(0.2), torch.tensor(-0.2))
        out.append(torch.stack([vol, inside.float() * 2 - 1]))
    return torch.stack(out)
