"""Realism report: generated phantoms measured against the published tables.

``python bench/phantoms.py -n 40 -o results/phantoms_report [--body-composition published]``
measures on the rendered label maps, in each centred vertebra's own frame:

* body width, depth, anterior and posterior height, canal width and depth, the tip-to-tip width
  of the transverse processes, per level, beside :data:`.morphometry.MORPHOMETRY`;
* HU per tissue class (median and 5-95 %) beside :data:`.morphometry.TISSUE_HU`, and the tissue
  fractions of the crops;
* the posture (lordosis, kyphosis, sacral slope, the centred vertebra's tilt);
* the body composition of the centred level (:func:`composition_rows`): skeletal muscle,
  subcutaneous and visceral fat areas on the mid-vertebral axial slice of the whole body, with
  the standard HU windows, beside the published values of :mod:`.composition` (Framingham /
  van der Werf / Derstine muscle, Kong fat; ``--body-composition published`` phantoms draw them);
and writes ``report.md``, ``report.json`` and a PNG montage of slices and AP / lateral DRRs.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .labels import TISSUE
from .model import Phantom, make_phantom
from .morphometry import MORPHOMETRY, TISSUE_HU
from .posture import layout

#: Measured quantity -> the published field it is compared with.
MEASURES = {
    "body_width": "body_width",
    "body_depth": "body_depth",
    "body_height_ant": "body_height_ant",
    "body_height_post": "body_height_post",
    "canal_width": "canal_width",
    "canal_depth": "canal_depth",
    "transverse_width": "transverse_width",
}
#: Tissue class -> TISSUE_HU keys it is compared with (the first present is used).
TISSUE_REFERENCE = {
    "fat": ("fat_subcutaneous",),
    "muscle": ("muscle",),
    "lung": ("lung_inflated",),
    "blood": ("blood_aorta_unenhanced",),
    "liver": ("liver",),
    "spleen": ("spleen",),
    "kidney": ("kidney",),
    "disc": ("disc_annulus",),
    "csf": ("csf",),
    "cord": ("spinal_cord",),
    "gas": ("bowel_gas",),
    "metal": ("titanium_screw",),
}


def _extent(x: np.ndarray, spacing: float) -> float:
    return float(np.ptp(x) + spacing) if x.size else float("nan")


def _gap(x: np.ndarray, spacing: float) -> float:
    """Largest gap (mm) between sorted positions ``x`` straddling 0."""
    x = np.sort(x)
    neg, pos = x[x < 0], x[x > 0]
    if not neg.size or not pos.size:
        return float("nan")
    return float(pos.min() - neg.max() - spacing)


def measure_vertebra(ph: Phantom) -> dict[str, float]:
    """Dimensions (mm) of the centred vertebra, measured on its label in its own frame."""
    sp = ph.params.spine
    v = sp.vertebrae[sp.centre_level]
    lay = layout(sp.vertebrae, sp.discs, sp.posture, sp.centre_level)[sp.centre_level]
    h = ph.spacing_mm
    idx = np.argwhere(ph.vertebra_mask)
    # world -> drawing frame (the layout's): the grid is only moved, never rotated
    world = idx * h + ph.affine[:3, 3] + np.asarray(ph.info["centre_mm"])
    u, vv, w = ((world - lay["c"]) @ lay["R"]).T
    near_top = (w > 0.55 * v.hb) & (w < 0.8 * v.hb)  # endplate dimensions, below the rim
    mid = np.abs(u) < 2.5
    out = dict(
        body_width=_extent(u[near_top & (vv > -0.3 * v.b)], h),
        body_depth=_extent(vv[mid & (vv > -v.b - 3) & near_top], h),
        body_height_ant=_extent(w[mid & (vv > 0.75 * v.b) & (vv < 0.9 * v.b)], h),
        body_height_post=_extent(w[mid & (vv < -0.6 * v.b) & (vv > -0.85 * v.b)], h),
        transverse_width=_extent(u, h),
        total_depth=_extent(vv, h),
    )
    ped = (np.abs(w - (v.hb_post - v.ph / 2 - 1.0)) < 2.0) & (np.abs(vv + v.b + 0.5 * v.pl) < 2.0)
    out["canal_width"] = _gap(u[ped], h)
    col = mid & (vv < 0)
    out["canal_depth"] = _gap(vv[col & (np.abs(w) < 0.5 * v.hb)] + v.b + v.cd / 2, h)
    return out


def tissue_stats(phantoms: Sequence[Phantom]) -> dict[str, dict[str, float]]:
    """Median and 5/95 % HU and the voxel fraction of each tissue class over the phantoms."""
    out: dict[str, dict[str, float]] = {}
    total = sum(ph.hu.size for ph in phantoms)
    for name, value in TISSUE.items():
        vals = np.concatenate([ph.hu[ph.tissue == value] for ph in phantoms])
        if vals.size == 0:
            continue
        p5, p50, p95 = np.percentile(vals, [5, 50, 95])
        out[name] = dict(median=float(p50), p5=float(p5), p95=float(p95), fraction=float(vals.size / total))
    return out


def hu_bands(phantoms: Sequence[Phantom]) -> dict[str, float]:
    """Fractions of crop voxels in HU bands (``docs/measurements.md``, "Phantoms", quotes them)."""
    hu = np.concatenate([ph.hu.ravel() for ph in phantoms])
    return {
        "above 450": float((hu > 450).mean()),
        "120 to 450": float(((hu > 120) & (hu <= 450)).mean()),
        "fat -500 to -30": float(((hu > -500) & (hu <= -30)).mean()),
        "soft -30 to 120": float(((hu > -30) & (hu <= 120)).mean()),
        "below -500": float((hu <= -500).mean()),
    }


def _ref_range(name: str) -> tuple[float, float] | None:
    for key in TISSUE_REFERENCE.get(name, ()):
        if key in TISSUE_HU:
            r = TISSUE_HU[key]
            return (r.lo, r.hi)
    return None


#: Grid of the whole-body slab the body composition is measured on: in-plane voxels, slices, mm.
COMPOSITION_GRID = (301, 9, 2.0)


def measure_composition(seed: int, body_composition: str = "default", level: str | None = None) -> dict[str, Any]:
    """Body composition of phantom ``seed``'s centred level: :func:`.composition.slice_areas` of
    the axial slice through the centred vertebra's centroid (a whole-body slab of
    :data:`COMPOSITION_GRID`), the lung area, and who the body is."""
    from .composition import slice_areas

    n, k, h = COMPOSITION_GRID
    ph = make_phantom(seed, size=(n, n, k), spacing_mm=h, level=level, body_composition=body_composition, regions=True)
    mid = k // 2
    out: dict[str, Any] = slice_areas(
        ph.hu[:, :, mid], ph.tissue[:, :, mid], {a: b[:, :, mid] for a, b in ph.regions.items()}, h
    )
    out["lung"] = float((ph.tissue[:, :, mid] == TISSUE["lung"]).sum() * h * h / 100.0)
    c = ph.params.composition
    out.update(level=ph.info["centre_level"], sex=c.sex if c else "-", bmi=c.bmi if c else None)
    return out


def composition_rows(measured: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per level and sex: measured SMA (mean ± SD), SAT / VAT (median), lung area, beside the
    published SMA (mean ± SD) and the published SAT / VAT medians at the bodies' mean BMI
    (:func:`.composition.fat_median`; both sexes when the phantoms have none)."""
    from .composition import SMA_PUBLISHED, fat_median

    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for m in measured:
        groups[(m["level"], m["sex"])].append(m)
    rows = []
    for (lvl, sex), ms in sorted(groups.items(), key=lambda t: ((t[0][0][0] != "T"), int(t[0][0][1:]), t[0][1])):
        sma = np.array([m["sma"] for m in ms])
        bmis = [m["bmi"] for m in ms if m["bmi"] is not None]
        bmi = float(np.mean(bmis)) if bmis else None
        sexes = ("female", "male") if sex == "-" else (sex,)
        pub = {
            x: dict(
                sma_mean=SMA_PUBLISHED[x][lvl].mean,
                sma_sd=SMA_PUBLISHED[x][lvl].sd,
                sma_source=SMA_PUBLISHED[x][lvl].source,
                sat_median=fat_median("sat", x, bmi if bmi else 23.5, lvl),
                vat_median=fat_median("vat", x, bmi if bmi else 23.5, lvl),
            )
            for x in sexes
        }
        rows.append(
            dict(
                level=lvl,
                sex=sex,
                n=len(ms),
                bmi=bmi,
                sma_mean=float(sma.mean()),
                sma_sd=float(sma.std()) if len(ms) > 1 else None,
                sat_median=float(np.median([m["sat"] for m in ms])),
                vat_median=float(np.median([m["vat"] for m in ms])),
                lung_median=float(np.median([m["lung"] for m in ms])),
                body_median=float(np.median([m["body"] for m in ms])),
                published=pub,
            )
        )
    return rows


def run_report(
    n: int,
    out_dir: str | Path,
    *,
    seed: int = 0,
    size: int = 64,
    spacing_mm: float = 1.25,
    n_images: int = 6,
    force: bool = False,
    progress: bool = True,
    body_composition: str = "default",
) -> dict[str, Any]:
    """Draw ``n`` phantoms (seeds ``seed..``), measure them and write the report folder.

    ``body_composition`` chooses the phantom model (``make_phantom``'s argument).

    Returns:
        The report as a dict (also ``report.json``).
    """
    from tqdm import tqdm

    from ..io import atomic_folder, atomic_write
    from .writing import montage

    phs: list[Phantom] = []
    dims: dict[str, list[dict[str, float]]] = defaultdict(list)
    posture: list[dict[str, float]] = []
    comp: list[dict[str, Any]] = []
    for s in tqdm(range(seed, seed + n), desc="phantoms", disable=not progress):
        ph = make_phantom(s, size=size, spacing_mm=spacing_mm, body_composition=body_composition)
        phs.append(ph)
        comp.append(measure_composition(s, body_composition))
        dims[ph.info["centre_level"]].append(measure_vertebra(ph))
        p = ph.params.spine.posture
        posture.append(
            dict(
                lordosis=p.lordosis,
                kyphosis=p.kyphosis,
                sacral_slope=p.sacral_slope,
                scoliosis_cobb=p.scoliosis_cobb,
                centre_sagittal_tilt=ph.info["vertebra"]["sagittal_tilt_deg"],
            )
        )
    tissues = tissue_stats(phs)
    bands = hu_bands(phs)
    rep: dict[str, Any] = dict(
        n=n,
        seed=seed,
        size=size,
        spacing_mm=spacing_mm,
        body_composition_model=body_composition,
        dimensions={},
        tissues=tissues,
        hu_bands=bands,
        posture={},
        composition=composition_rows(comp),
    )
    for lvl in sorted(dims, key=lambda x: (x[0] != "T", int(x[1:]))):
        rows = {}
        for key, field in MEASURES.items():
            vals = np.array([d[key] for d in dims[lvl]], float)
            vals = vals[np.isfinite(vals)]
            ref = getattr(MORPHOMETRY[lvl], field)
            rows[key] = dict(
                mean=float(vals.mean()) if vals.size else None,
                sd=float(vals.std()) if vals.size > 1 else None,
                n=int(vals.size),
                published_mean=ref.mean,
                published_sd=ref.sd,
            )
        rep["dimensions"][lvl] = rows
    for key in posture[0]:
        vals = np.array([p[key] for p in posture])
        rep["posture"][key] = dict(
            mean=float(vals.mean()), sd=float(vals.std()), min=float(vals.min()), max=float(vals.max())
        )
    rep["posture"]["scoliosis_fraction"] = float(np.mean([p["scoliosis_cobb"] > 0 for p in posture]))
    with atomic_folder(out_dir, force=force) as tmp:
        montage(phs[:n_images], tmp / "montage.png")
        montage(
            [
                make_phantom(s, size=size, spacing_mm=spacing_mm, fov_mm=320.0, body_composition=body_composition)
                for s in range(seed, seed + 2)
            ],
            tmp / "whole_body.png",
        )
        with atomic_write(tmp / "report.json", force=True) as t:
            Path(t).write_text(json.dumps(rep, indent=1))
        with atomic_write(tmp / "report.md", force=True) as t:
            Path(t).write_text(markdown(rep))
    return rep


def _fmt(x: float | None, d: int = 1) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.{d}f}"


def markdown(rep: dict[str, Any]) -> str:
    """The report as Markdown tables."""
    lines = [
        (
            f"# Phantom realism report ({rep['n']} phantoms, seeds {rep['seed']}-"
            f"{rep['seed'] + rep['n'] - 1}, {rep['size']}^3 at {rep['spacing_mm']} mm)"
        ),
        "",
        (
            "Measured on the label maps in each centred vertebra's frame; published values from "
            "`xfit/phantoms/morphometry.py` (mean ± SD). mm."
        ),
        "",
    ]
    keys = list(MEASURES)
    lines += ["| level | n | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for lvl, rows in rep["dimensions"].items():
        cells = [
            f"{_fmt(rows[k]['mean'])} ± {_fmt(rows[k]['sd'])} ({_fmt(rows[k]['published_mean'])} ± "
            f"{_fmt(rows[k]['published_sd'])})"
            for k in keys
        ]
        lines.append(f"| {lvl} | {rows[keys[0]]['n']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## HU per tissue class",
        "",
        "| tissue | median | 5-95 % | published range | fraction of voxels |",
        "|---|---|---|---|---|",
    ]
    for name, st in rep["tissues"].items():
        ref = _ref_range(name)
        lines.append(
            f"| {name} | {st['median']:.0f} | {st['p5']:.0f} to {st['p95']:.0f} | "
            + (f"{ref[0]:.0f} to {ref[1]:.0f}" if ref else "–")
            + f" | {st['fraction']:.3f} |"
        )
    lines += ["", "## HU bands of the crops", "", "| band | fraction |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in rep["hu_bands"].items()]
    lines += ["", "## Posture (degrees)", "", "| angle | mean | SD | min | max |", "|---|---|---|---|---|"]
    for k, st in rep["posture"].items():
        if isinstance(st, dict):
            lines.append(f"| {k} | {st['mean']:.1f} | {st['sd']:.1f} | {st['min']:.1f} | {st['max']:.1f} |")
    lines.append(f"\nScoliosis in {rep['posture']['scoliosis_fraction']:.0%} of the cases.")
    if rep.get("composition"):
        lines += composition_markdown(rep["composition"], rep.get("body_composition_model", "default"))
    lines.append("\n![montage](montage.png)\n\n![whole body](whole_body.png)\n")
    return "\n".join(lines)


def composition_markdown(rows: Sequence[dict[str, Any]], model: str) -> list[str]:
    """Markdown lines of :func:`composition_rows`."""
    from .composition import SOURCES

    out = [
        "",
        f"## Body composition at the centred level (model: {model})",
        "",
        (
            "Mid-vertebral axial slice of the whole body (2 mm voxels), skeletal muscle -29..150 HU "
            "within the muscles, fat -190..-30 HU between the skin and the wall muscles "
            "(subcutaneous, SAT) or inside them (visceral, VAT); cm². Published: skeletal muscle "
            "mean ± SD (Framingham women at T5/T8/T10/L3, men derived from van der Werf 2018; other "
            "levels interpolated, see `xfit/phantoms/composition.py`), SAT / VAT medians at L3 "
            "(Kong 2022) grown to the bodies' mean BMI. Sex '-': the default model draws none, so "
            "both sexes' values are shown (F / M)."
        ),
        "",
        (
            "| level | sex | n | BMI | muscle (published) | SAT median (published) | VAT median (published) "
            "| lung median |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        pubs = list(r["published"].values())
        sma_pub = " / ".join(f"{p['sma_mean']:.0f} ± {p['sma_sd']:.0f}" for p in pubs)
        sat_pub = " / ".join(f"{p['sat_median']:.0f}" for p in pubs)
        vat_pub = " / ".join(f"{p['vat_median']:.0f}" if p["vat_median"] > 0 else "–" for p in pubs)
        out.append(
            f"| {r['level']} | {r['sex']} | {r['n']} | {_fmt(r['bmi'])} | "
            f"{r['sma_mean']:.0f} ± {_fmt(r['sma_sd'], 0)} ({sma_pub}) | "
            f"{r['sat_median']:.0f} ({sat_pub}) | {r['vat_median']:.0f} ({vat_pub}) | "
            f"{r['lung_median']:.0f} |"
        )
    out += ["", "Sources: " + "; ".join(f"{k}: {v}" for k, v in SOURCES.items()), ""]
    return out
