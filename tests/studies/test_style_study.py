"""``xfit evaluate --style-strength`` and ``xfit study style`` (issue 28) on a tiny random prior:
the observation is the deterministic clinical-style radiograph, runs record the strength, old run
folders (no strength) keep their keys, and the study writes its curves."""

import csv
import json

import numpy as np
import pytest
from cli_helpers import assert_user_error, run

from xfit.errors import InputError
from xfit.studies import evaluate as ev
from xfit.studies.evaluate import EvalSpec, observe

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_prior_file):
    d = tmp_path_factory.mktemp("tiny_style")
    prior = tiny_prior_file(torch_seed=1, n=300)
    (d / "fit.yaml").write_text("steps: 3\nrestarts: 1\ncoarse_fraction: 0.0\n")
    return {"prior": prior, "fit": d / "fit.yaml"}


def _case():
    from xfit.prior.config import load_config as load_prior_config

    class _P:  # only .config is used
        config = load_prior_config("tiny")

    views = ev.default_views((0.0, 90.0), 32, 3.0)
    return ev.make_case(3, _P, views), views


def test_observe_hands_deterministic_clinical_radiographs():
    case, views = _case()
    styled = observe(case, views, style_strength=1.0, seed=2)
    again = observe(case, views, style_strength=1.0, seed=2)
    other = observe(case, views, style_strength=1.0, seed=3)
    for a, b, c, p in zip(styled.images, again.images, other.images, case.images):
        assert a.shape == p.shape and a.dtype == np.float32 and 0.0 <= a.min() and a.max() <= 1.0
        np.testing.assert_array_equal(a, b)  # the case's seed decides the noise
        assert not np.array_equal(a, c)
        assert np.corrcoef(a.ravel(), p.ravel())[0, 1] < 0.99  # processed: not an affine map any more
    assert styled.views == views
    ideal = observe(case, views, style_strength=0.0)
    for a, p in zip(ideal.images, case.images):
        assert np.corrcoef(a.ravel(), p.ravel())[0, 1] > 0.9999  # strength 0: an affine map (16 bit)
    assert np.array_equal(observe(case, views).images[0], case.images[0])  # no style: line integrals


def test_style_strength_key_and_checks(tiny):
    spec = EvalSpec(prior=str(tiny["prior"]), phantoms=1, detector=32, pixel_spacing_mm=3.0)
    assert "style_strength" not in spec.key()  # runs made before the style study keep their keys
    styled = EvalSpec(prior=str(tiny["prior"]), phantoms=1, detector=32, pixel_spacing_mm=3.0, style_strength=0.5)
    assert styled.key()["style_strength"] == 0.5
    for bad in (dict(style_strength=1.5), dict(style_strength=0.5, photons=1e4), dict(style_strength=float("nan"))):
        s = EvalSpec(prior=str(tiny["prior"]), phantoms=1, detector=32, pixel_spacing_mm=3.0, **bad)
        with pytest.raises(InputError):
            ev.check_spec(s)
    tiny_detector = EvalSpec(prior=str(tiny["prior"]), phantoms=1, detector=8, pixel_spacing_mm=1.0, style_strength=1.0)
    with pytest.raises(InputError):  # the presets' marker does not fit on an 8 mm detector
        ev.check_spec(tiny_detector)


def _opts(tiny, *extra):
    return [
        "--prior",
        tiny["prior"],
        "--phantoms",
        "2",
        "--detector",
        "32",
        "--pixel-spacing",
        "3",
        "--random",
        "2",
        "--fit-config",
        tiny["fit"],
        "--quiet",
        *extra,
    ]


def test_cli_study_style(tiny, tmp_path):
    res = run("study", "style", *_opts(tiny, "--methods", "mean,fit", "--strengths", "0,1", "-o", tmp_path / "st"))
    assert res.exit_code == 0, res.output
    out = tmp_path / "st"
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["style_0", "style_1"]
    assert (out / "curve_style_strength.png").is_file()
    curve = list(csv.DictReader((out / "curve.csv").open()))
    assert {(r["axis"], r["value"], r["method"]) for r in curve} == {
        ("style_strength", v, m) for v in ("0", "1") for m in ("mean", "fit")
    }
    key = json.loads((out / "style_1" / "settings.json").read_text())["key"]
    assert key["style_strength"] == 1.0
    assert "clinical-style radiographs at strength 1" in (out / "style_1" / "summary.md").read_text()
    assert "clinical style strength" in (out / "summary.md").read_text()
    # the methods were handed other images at strength 1 than at 0
    ncc = {
        s: [r["view_ncc"] for r in csv.DictReader((out / s / "cases.csv").open()) if r["method"] == "fit"]
        for s in ("style_0", "style_1")
    }
    assert len(ncc["style_0"]) == 2 and ncc["style_0"] != ncc["style_1"]
    res = run("evaluate", *_opts(tiny, "--methods", "mean", "--style-strength", "0.5", "-o", tmp_path / "ev"))
    assert res.exit_code == 0, res.output
    assert_user_error(run("study", "style", *_opts(tiny, "--strengths", "0,2", "-o", tmp_path / "b")), "[0, 1]")
    assert_user_error(
        run("evaluate", *_opts(tiny, "--style-strength", "1", "--dose", "1e3", "-o", tmp_path / "c")), "own"
    )
