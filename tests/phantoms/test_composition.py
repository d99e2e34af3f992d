"""Body composition per level (xfit.phantoms.composition): published areas, the fitted torso, the
default model left as it was, the report and the CLI option."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from xfit.errors import InputError
from xfit.phantoms import TISSUE, make_phantom, write_phantoms
from xfit.phantoms.composition import SMA_PUBLISHED, draw_composition, fat_median, published_ranges, slice_areas
from xfit.phantoms.morphometry import TISSUE_HU
from xfit.phantoms.report import composition_markdown, composition_rows, measure_composition


@pytest.fixture(scope="module")
def measured():
    """Published-model phantoms at L3 (4) and T8 (2): areas on the rendered mid-level slice."""
    out = [measure_composition(s, "published", level="L3") for s in range(4)]
    out += [measure_composition(s, "published", level="T8") for s in range(4, 6)]
    return out


def test_sampled_phantoms_fall_within_published_ranges(measured):
    sexes = set()
    for m in measured:
        r = published_ranges(m["sex"], m["level"], m["bmi"])
        sexes.add(m["sex"])
        for kind in ("sma", "sat"):
            assert r[kind][0] <= m[kind] <= r[kind][1], (m, kind, r[kind])
        if m["level"][0] == "L":
            assert r["vat"][0] <= m["vat"] <= r["vat"][1], (m, r["vat"])
        else:
            assert m["vat"] < 20 and m["lung"] > 100  # a thoracic cavity: lungs, little fat
    assert sexes == {"female", "male"}


@pytest.mark.parametrize("seed,level", [(0, "L3"), (4, "T8")])
def test_measured_areas_hit_the_drawn_targets(seed, level):
    from xfit.phantoms.report import COMPOSITION_GRID

    n, k, h = COMPOSITION_GRID
    ph = make_phantom(seed, size=(n, n, k), spacing_mm=h, level=level, body_composition="published", regions=True)
    c = ph.params.composition
    mid = k // 2
    got = slice_areas(ph.hu[:, :, mid], ph.tissue[:, :, mid], {a: b[:, :, mid] for a, b in ph.regions.items()}, h)
    for kind, want in (("sma", c.sma_cm2), ("sat", c.sat_cm2), ("body", c.body_cm2)):
        assert abs(got[kind] - want) <= 0.08 * want + 5, (kind, got[kind], want)
    if level[0] == "L":
        assert abs(got["vat"] - c.vat_cm2) <= 0.15 * c.vat_cm2 + 8, (got["vat"], c.vat_cm2)
    # the HU ranges that held before still hold: muscle and fat of the slice inside the published
    sl = ph.hu[:, :, mid]
    for cls, ref in (("muscle", "muscle"), ("fat", "fat_subcutaneous")):
        med = float(np.median(sl[ph.tissue[:, :, mid] == TISSUE[cls]]))
        lo, hi = TISSUE_HU[ref].lo, TISSUE_HU[ref].hi
        assert lo - 25 <= med <= hi + 25, (cls, med)
    meta = ph.to_json()
    assert meta["body_composition"]["model"] == "published" and meta["body_composition"]["sex"] == c.sex
    assert meta["params"]["composition"]["bmi"] == pytest.approx(c.bmi)


def test_published_draws_follow_the_tables():
    rng = np.random.default_rng(0)
    draws = [draw_composition(rng, "L3") for _ in range(3000)]
    for sex in ("female", "male"):
        sma = np.array([d.sma_cm2 for d in draws if d.sex == sex])
        ref = SMA_PUBLISHED[sex]["L3"]
        assert abs(sma.mean() - ref.mean) < 0.04 * ref.mean, (sex, sma.mean(), ref)
        assert 0.75 * ref.sd < sma.std() < 1.25 * ref.sd, (sex, sma.std(), ref)
        sat = np.array([d.sat_cm2 for d in draws if d.sex == sex])
        bmi = np.array([d.bmi for d in draws if d.sex == sex])
        lean = np.abs(bmi - 23.5) < 1.0  # kong2022's cohort BMI: its median
        assert abs(np.median(sat[lean]) / fat_median("sat", sex, 23.5, "L3") - 1) < 0.15
    assert SMA_PUBLISHED["female"]["L3"].mean == 119.5 and SMA_PUBLISHED["female"]["T8"].sd == 12.5
    assert published_ranges("male", "L3")["sma"][0] > 90  # a wasted 50 cm^2 man is out of range
    assert fat_median("vat", "male", 30.0, "T8") == 0.0  # no visceral fat target in the thorax
    # the standard windows, measured at their edges: skeletal muscle -29..150 HU (muscle class
    # only), adipose tissue -190..-30 HU (any class); 1 cm² pixels
    hu = np.array([[-29.0, -30.0, 150.0, 151.0, -190.0, -191.0, -30.0, -29.0]])
    tissue = np.full(hu.shape, TISSUE["muscle"])
    tissue[0, 4:] = TISSUE["fat"]
    regions = {"subcutaneous": np.ones(hu.shape, bool), "cavity": np.zeros(hu.shape, bool)}
    areas = slice_areas(hu, tissue, regions, spacing_mm=10.0)
    assert areas["sma"] == 2.0 and areas["sat"] == 3.0 and areas["vat"] == 0.0, areas


def test_default_model_is_the_old_phantom_and_published_keeps_the_spine():
    a = make_phantom(7, size=32, spacing_mm=2.5)
    b = make_phantom(7, size=32, spacing_mm=2.5, body_composition="default")
    assert np.array_equal(a.hu, b.hu) and a.params.composition is None
    assert a.info["body_composition"] == "default" and "composition" not in a.params.to_json()
    c = make_phantom(7, size=32, spacing_mm=2.5, body_composition="published")
    assert np.array_equal(a.seg, c.seg)  # the same vertebrae: only the body around them changes
    assert a.params.spine == c.params.spine and a.params.scanner == c.params.scanner
    assert not np.array_equal(a.hu, c.hu)
    with pytest.raises(InputError, match="body_composition"):
        make_phantom(7, size=16, body_composition="fat")


def test_report_rows_and_markdown(measured):
    rows = composition_rows(measured + [dict(measured[0], sex="-", bmi=None)])
    l3 = [r for r in rows if r["level"] == "L3"]
    assert {r["sex"] for r in l3} >= {"-"} and all(r["n"] >= 1 for r in rows)
    default = next(r for r in l3 if r["sex"] == "-")
    assert set(default["published"]) == {"female", "male"}
    text = "\n".join(composition_markdown(rows, "published"))
    assert "Body composition" in text and "| L3 |" in text and "tonnesen2023" in text


def test_write_phantoms_and_cli_option(tmp_path):
    write_phantoms(tmp_path / "w", 1, size=16, spacing_mm=5.0, seed=3, progress=False, body_composition="published")
    meta = json.loads((tmp_path / "w" / "case0000.json").read_text())
    assert meta["body_composition"]["model"] == "published"
    out = tmp_path / "cli"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "xfit.cli",
            "phantoms",
            str(out),
            "-n",
            "1",
            "--size",
            "16",
            "--spacing",
            "5",
            "--body-composition",
            "published",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "case0000.json").read_text())["body_composition"]["model"] == "published"
    r = subprocess.run(
        [sys.executable, "-m", "xfit.cli", "phantoms", str(tmp_path / "bad"), "-n", "1", "--body-composition", "obese"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and not (tmp_path / "bad").exists()
