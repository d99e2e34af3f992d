"""``xfit evaluate`` and ``xfit study angles|geometry|noise`` end to end on a tiny random prior and
an untrained tiny baseline (quality is not asserted: untrained networks have none; the README's
tables come from the commands it names), plus resume, the paired test and bad input."""

import csv
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import assert_user_error, run
from spine_synth import write_xfit_collection
from tiny_models import untrained_x2ct_checkpoint

from xfit.errors import InputError, OutputExistsError
from xfit.studies import evaluate as ev
from xfit.studies.evaluate import EvalSpec, evaluate, observe, paired_test, parse_methods

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_prior_file):
    """A tiny prior, a 3-step fit config and an untrained tiny X2CT-CNN checkpoint."""
    d = tmp_path_factory.mktemp("tiny")
    prior = tiny_prior_file(torch_seed=1, n=300)
    (d / "fit.yaml").write_text("steps: 3\nrestarts: 1\ncoarse_fraction: 0.0\n")
    ckpt = untrained_x2ct_checkpoint(d / "x2ct.safetensors")
    return {"prior": prior, "fit": d / "fit.yaml", "ckpt": ckpt}


def _spec(tiny, **kw) -> EvalSpec:
    base = dict(
        prior=str(tiny["prior"]),
        methods=("fit", "mean"),
        phantoms=2,
        detector=32,
        pixel_spacing_mm=3.0,
        n_random=3,
        fit_config=str(tiny["fit"]),
    )
    return EvalSpec(**{**base, **kw})


def _rows(out: Path) -> list[dict]:
    return list(csv.DictReader((out / "cases.csv").open()))


def test_evaluate_writes_rows_summary_and_panel(tiny, tmp_path):
    methods = ("fit", "mean", "best-of-n", "best-of-n-oracle", "x2ct-cnn")
    spec = _spec(tiny, methods=methods, checkpoints={"x2ct-cnn": str(tiny["ckpt"])})
    rows = evaluate(spec, tmp_path / "ev", progress=False)  # the baseline's 16^3 at 5 mm resampled onto 32^3 at 2.5 mm
    assert [(r["case"], r["method"]) for r in rows] == [(f"phantom{s:04d}", m) for s in (0, 1) for m in methods]
    for r in rows:
        for k in ("psnr_db", "ssim", "mae_hu", "dice", "view_ncc", "third_view_ncc", "seconds"):
            assert math.isfinite(r[k]), (r["method"], k)
    for case in (
        "phantom0000",
        "phantom0001",
    ):  # the oracle picks the best PSNR of the samples the X-ray criterion sees
        by = {r["method"]: r for r in rows if r["case"] == case}
        assert by["best-of-n-oracle"]["psnr_db"] >= by["best-of-n"]["psnr_db"]
    assert len(_rows(tmp_path / "ev")) == 10
    text = (tmp_path / "ev" / "summary.md").read_text()
    assert "Wilcoxon" in text and "`x2ct-cnn`" in text and "best of 3 samples" in text
    (tmp_path / "ev" / "summary.md").unlink()  # the summary is a function of the committed files
    from xfit.studies.sweeps import main as sweeps_main

    assert sweeps_main([str(tmp_path / "ev")]) == 0
    assert (tmp_path / "ev" / "summary.md").read_text() == text
    assert (tmp_path / "ev" / "panel.png").stat().st_size > 1000
    s = np.load(tmp_path / "ev" / "slices" / "phantom0001__x2ct-cnn.npy", allow_pickle=False)
    assert s.shape == (3, 32, 32)
    meta = json.loads((tmp_path / "ev" / "settings.json").read_text())
    assert meta["wall_seconds"] > 0 and "cores" in meta["machine"] and set(meta["sources"]) == set(methods)
    import shutil

    # resumed on a fresh machine (slices are not committed): the panel's are recomputed, but not the fit's
    assert meta["panel_cells"] == [f"phantom000{i}/{c}" for i in (0, 1) for c in ("truth", *methods)]
    shutil.rmtree(tmp_path / "ev" / "slices")
    before, png = _rows(tmp_path / "ev"), (tmp_path / "ev" / "panel.png").read_bytes()
    evaluate(spec, tmp_path / "ev", progress=False)
    assert _rows(tmp_path / "ev") == before  # no row recomputed
    assert (tmp_path / "ev" / "panel.png").read_bytes() == png  # the fit's cells would be blank: kept
    again = np.load(tmp_path / "ev" / "slices" / "phantom0001__x2ct-cnn.npy", allow_pickle=False)
    assert np.array_equal(again, s)
    assert not (tmp_path / "ev" / "slices" / "phantom0001__fit.npy").exists()
    assert ev.fill_panel_slices(spec, tmp_path / "ev", ["phantom0000", "phantom0001"]) == []  # nothing left to do


def test_interrupted_run_resumes_and_skips_finished_cases(tiny, tmp_path, monkeypatch):
    spec = _spec(tiny, methods=("mean",), phantoms=3)
    real = ev.evaluate_case
    calls = []

    def stop_at_second(spec_, index, methods):
        calls.append((index, tuple(methods)))
        if index == 1:
            raise KeyboardInterrupt
        return real(spec_, index, methods)

    monkeypatch.setattr(ev, "evaluate_case", stop_at_second)
    with pytest.raises(KeyboardInterrupt):
        evaluate(spec, tmp_path / "ev", progress=False)
    assert [r["case"] for r in _rows(tmp_path / "ev")] == ["phantom0000"]
    calls.clear()
    monkeypatch.setattr(ev, "evaluate_case", lambda s, i, m: (calls.append((i, tuple(m))), real(s, i, m))[1])
    evaluate(spec, tmp_path / "ev", progress=False)
    assert calls == [(1, ("mean",)), (2, ("mean",))]  # case 0 is not run again
    calls.clear()
    evaluate(_spec(tiny, methods=("mean", "fit"), phantoms=3), tmp_path / "ev", progress=False)  # a method added
    assert calls == [(i, ("fit",)) for i in range(3)]
    before = json.loads((tmp_path / "ev" / "settings.json").read_text())["wall_seconds"]
    assert before > 0
    here = json.loads((tmp_path / "ev" / "settings.json").read_text())["machine"]
    monkeypatch.setattr(ev, "machine", lambda: "Other CPU, 8 cores")  # looked at on another machine
    evaluate(_spec(tiny, methods=("mean", "fit"), phantoms=3), tmp_path / "ev", progress=False)  # nothing to do
    meta = json.loads((tmp_path / "ev" / "settings.json").read_text())
    assert meta["wall_seconds"] == before and meta["machine"] == here  # neither time nor machine added
    assert len(_rows(tmp_path / "ev")) == 6
    ev.write_rows(tmp_path / "ev" / "cases.csv", _rows(tmp_path / "ev")[:-1])  # one row left for it to compute
    for _ in range(2):  # resumed there (then once more with nothing to do)
        evaluate(_spec(tiny, methods=("mean", "fit"), phantoms=3), tmp_path / "ev", progress=False)
        meta = json.loads((tmp_path / "ev" / "settings.json").read_text())
        assert meta["machine"] == f"{here}; Other CPU, 8 cores" and ev.machines(meta) == [here, "Other CPU, 8 cores"]
        assert meta["wall_seconds"] > before and len(_rows(tmp_path / "ev")) == 6
    with pytest.raises(OutputExistsError, match="other settings"):
        evaluate(_spec(tiny, methods=("mean",), phantoms=3, angles=(0.0, 80.0)), tmp_path / "ev", progress=False)


def test_reuse_copies_rows_of_runs_with_the_same_settings_only(tiny, tmp_path, monkeypatch):
    from xfit.studies.sweeps import angle_conditions, run_sweep

    evaluate(_spec(tiny, methods=("mean", "fit")), tmp_path / "plain", progress=False)  # at (0, 90)
    calls = []
    real = ev.evaluate_case
    monkeypatch.setattr(ev, "evaluate_case", lambda s, i, m: (calls.append((s.angles, i, tuple(m))), real(s, i, m))[1])
    run_sweep(
        _spec(tiny, methods=("fit", "mean")),
        angle_conditions([60.0, 90.0]),
        tmp_path / "ang",
        progress=False,
        reuse=[tmp_path / "plain"],
    )
    assert calls == [((0.0, 60.0), 0, ("fit", "mean")), ((0.0, 60.0), 1, ("fit", "mean"))]  # 90: all copied
    key = lambda r: (r["case"], r["method"])
    assert sorted(_rows(tmp_path / "ang" / "angle_90"), key=key) == sorted(_rows(tmp_path / "plain"), key=key)
    assert (tmp_path / "ang" / "angle_90" / "slices" / "phantom0001__fit.npy").is_file()
    meta = json.loads((tmp_path / "ang" / "angle_90" / "settings.json").read_text())
    assert meta["reused_rows"] == {str(tmp_path / "plain"): 4}
    run_sweep(_spec(tiny, methods=("fit", "mean")), angle_conditions([60.0, 90.0]), tmp_path / "ang", progress=False)
    assert (
        json.loads((tmp_path / "ang" / "angle_90" / "settings.json").read_text())["reused_rows"] == meta["reused_rows"]
    )  # a resumed sweep keeps the record
    text = (tmp_path / "ang" / "summary.md").read_text()
    assert "+4 rows reused" in text
    best = {}
    for r in csv.DictReader((tmp_path / "ang" / "curve.csv").open()):
        if r["metric"] == "psnr_db" and r["value"] == "60":
            best[r["method"]] = float(r["mean"])
    top = max(best, key=best.get)
    assert f"| **best** | `{top}` {best[top]:.1f} |" in text  # the best PSNR at 60 degrees
    from xfit.studies.sweeps import main as sweeps_main

    (tmp_path / "ang" / "summary.md").unlink()  # rewritten from the folders alone: the same
    assert sweeps_main([str(tmp_path / "ang")]) == 0
    assert (tmp_path / "ang" / "summary.md").read_text() == text
    import shutil

    shutil.copytree(tmp_path / "ang", tmp_path / "part")  # a sweep stopped part way: the short cell says so
    ev.write_rows(
        tmp_path / "part" / "angle_60" / "cases.csv",
        [
            r
            for r in ev.read_rows(tmp_path / "part" / "angle_60" / "cases.csv")
            if not (r["method"] == "fit" and r["case"] == "phantom0001")
        ],
    )
    assert sweeps_main([str(tmp_path / "part")]) == 0
    assert "(n=1 of 2)" in (tmp_path / "part" / "summary.md").read_text()
    plain = (tmp_path / "plain" / "summary.md").read_text()
    assert sweeps_main([str(tmp_path / "plain")]) == 0  # an evaluate run: its summary rewritten, the same
    assert (tmp_path / "plain" / "summary.md").read_text() == plain
    (tmp_path / "empty").mkdir()
    assert sweeps_main([str(tmp_path / "empty")]) == 2  # neither a sweep nor a run folder
    calls.clear()  # a method the other run lacks is computed; a sweep folder offers its conditions
    evaluate(
        _spec(tiny, methods=("fit", "mean", "best-of-n"), angles=(0.0, 60.0)),
        tmp_path / "more",
        progress=False,
        reuse=[tmp_path / "ang"],
    )
    assert calls == [((0.0, 60.0), 0, ("best-of-n",)), ((0.0, 60.0), 1, ("best-of-n",))]
    with pytest.raises(InputError, match="not found"):
        evaluate(_spec(tiny, methods=("mean",)), tmp_path / "x", progress=False, reuse=[tmp_path / "nowhere"])
    cfg = tmp_path / "fit2.yaml"  # the fit config edited since: the fit rows are not taken, the others are
    cfg.write_text("steps: 2\nrestarts: 1\ncoarse_fraction: 0.0\n")
    spec = _spec(tiny, methods=("fit", "mean"), phantoms=1, fit_config=str(cfg))
    evaluate(spec, tmp_path / "old", progress=False)
    cfg.write_text("steps: 3\nrestarts: 1\ncoarse_fraction: 0.0\n")
    calls.clear()
    evaluate(spec, tmp_path / "new", progress=False, reuse=[tmp_path / "old"])
    assert calls == [((0.0, 90.0), 0, ("fit",))]


def test_an_edited_fit_config_is_not_mixed_into_old_fit_rows(tiny, tmp_path):
    cfg = tmp_path / "fit.yaml"
    cfg.write_text("steps: 2\nrestarts: 1\ncoarse_fraction: 0.0\n")
    spec = _spec(tiny, methods=("mean", "fit"), phantoms=1, fit_config=str(cfg))
    evaluate(spec, tmp_path / "ev", progress=False)
    assert json.loads((tmp_path / "ev" / "settings.json").read_text())["fit_settings"]["steps"] == 2
    cfg.write_text("steps: 3\nrestarts: 1\ncoarse_fraction: 0.0\n")
    with pytest.raises(OutputExistsError, match="fit config changed .*steps"):
        evaluate(spec, tmp_path / "ev", progress=False)
    evaluate(dataclasses.replace(spec, methods=("mean",)), tmp_path / "mean", progress=False)
    cfg.write_text("steps: 2\nrestarts: 1\ncoarse_fraction: 0.0\n")
    evaluate(spec, tmp_path / "mean", progress=False)  # no fit row yet: the config may change


def test_changed_checkpoint_is_not_mixed_into_a_run(tiny, tmp_path):
    import shutil

    ck = tmp_path / "c.safetensors"
    shutil.copy(tiny["ckpt"], ck)
    spec = _spec(tiny, methods=("x2ct-cnn",), phantoms=1, checkpoints={"x2ct-cnn": str(ck)})
    evaluate(spec, tmp_path / "ev", progress=False)
    ck.write_bytes(ck.read_bytes() + b" ")
    with pytest.raises(OutputExistsError, match="changed"):
        evaluate(spec, tmp_path / "ev", progress=False)


def test_paired_test_by_hand():
    rows = [{"case": f"c{i}", "method": "fit", "psnr_db": 10.0, "mae_hu": 100.0} for i in range(5)]
    rows += [{"case": f"c{i}", "method": "m", "psnr_db": 10.0 + i + 1, "mae_hu": 100.0 + i + 1} for i in range(5)]
    n, better, p = paired_test(rows, "m", "fit", "psnr_db")
    assert (n, better) == (5, 5) and p == pytest.approx(2 / 32)  # exact: all five ranks positive
    n, better, p = paired_test(rows, "m", "fit", "mae_hu")  # lower is better: never better
    assert (n, better) == (5, 0) and p == pytest.approx(2 / 32)
    assert math.isnan(paired_test(rows, "fit", "fit", "psnr_db")[2])  # all differences zero
    # tied differences (1, 1, 2, 3, 4): the tie-corrected normal approximation, by hand:
    # W+ = 15, mean n(n+1)/4 = 7.5, var n(n+1)(2n+1)/24 - (2^3 - 2)/48 = 13.625
    tied = rows[:5] + [{"case": f"c{i}", "method": "t", "psnr_db": 10.0 + d} for i, d in enumerate([1, 1, 2, 3, 4])]
    z = 7.5 / math.sqrt(13.625)
    assert paired_test(tied, "t", "fit", "psnr_db")[2] == pytest.approx(math.erfc(z / math.sqrt(2)))


def test_observe_perturbs_what_the_method_is_handed():
    from xfit.geometry import View

    case = ev.Case(
        3,
        np.zeros((4, 4, 4), np.float32),
        np.zeros((4, 4, 4), bool),
        [np.full((8, 8), 2.0, np.float32)] * 2,
        "phantom0003",
    )
    views = [View(0.0, shape=(8, 8)), View(90.0, shape=(8, 8))]
    obs = observe(case, views, angle_error_deg=2.0, shift_error_mm=5.0, photons=1e4, seed=1)
    for v, t in zip(obs.views, views):
        assert abs(abs(v.angle_deg - t.angle_deg) - 2.0) < 1e-9
        assert np.linalg.norm(np.subtract(v.isocenter_mm, t.isocenter_mm)) == pytest.approx(5.0)
    assert not np.array_equal(obs.images[0], case.images[0]) and abs(float(obs.images[0].mean()) - 2.0) < 0.1
    again = observe(case, views, angle_error_deg=2.0, shift_error_mm=5.0, photons=1e4, seed=1)
    assert again.views == obs.views and np.array_equal(again.images[0], obs.images[0])
    clean = observe(case, views)
    assert clean.views == views and np.array_equal(clean.images[1], case.images[1])


def test_whole_body_case_keeps_the_crop_truth():
    """Whole-body X-rays integrate more anatomy than the crop; the truth is the same crop."""
    from xfit.prior.config import load_config as load_prior_config

    class _P:  # only .config is used
        config = load_prior_config("tiny")

    views = ev.default_views((0.0, 90.0), 32, 3.0)
    crop = ev.make_case(3, _P, views)
    body = ev.make_case(3, _P, views, whole_body_fov_mm=200.0)
    np.testing.assert_array_equal(crop.hu, body.hu)
    np.testing.assert_array_equal(crop.vertebra, body.vertebra)
    for a, b in zip(crop.images, body.images):
        assert a.shape == b.shape and float((b - a).mean()) > 0.5  # extra tissue along every ray


def test_data_folder_cases(tiny, tmp_path):
    data = write_xfit_collection(tmp_path / "ct", 1, centres=["L1"], levels=("T12", "L1", "L2"))
    rows = evaluate(
        EvalSpec(
            prior=str(tiny["prior"]),
            methods=("mean",),
            phantoms=None,
            data=str(data),
            detector=32,
            pixel_spacing_mm=3.0,
        ),
        tmp_path / "ev",
        progress=False,
    )
    assert rows and all(
        r["case"].startswith("case0000") and r["case"].split(":")[1] in ("T12", "L1", "L2") for r in rows
    )
    assert all(r["dice"] >= 0 for r in rows)


def test_parse_methods():
    assert parse_methods("fit,x2ct-cnn@jitter,x2ct-cnn") == ("fit", "x2ct-cnn@jitter", "x2ct-cnn")
    for bad in ("fit,fit", "nope", "fit@x", "ear@a b"):
        with pytest.raises(InputError):
            parse_methods(bad)


def _opts(tiny, *extra):
    return [
        "--prior",
        tiny["prior"],
        "--phantoms",
        "1",
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


def test_cli_evaluate_and_studies(tiny, tmp_path):
    res = run("evaluate", *_opts(tiny, "--methods", "mean,fit", "-o", tmp_path / "ev"))
    assert res.exit_code == 0, res.output
    assert "xfit fit (`fit`)" in res.output
    res = run(
        "study", "angles", *_opts(tiny, "--methods", "mean", "--second-angle", "60:90:30", "-o", tmp_path / "ang")
    )
    assert res.exit_code == 0, res.output
    curve = list(csv.DictReader((tmp_path / "ang" / "curve.csv").open()))
    assert {(r["value"], r["method"]) for r in curve} == {("60", "mean"), ("90", "mean")}
    assert (tmp_path / "ang" / "curve_second_angle_deg.png").is_file()
    res = run(
        "study",
        "geometry",
        *_opts(
            tiny, "--methods", "mean,fit-pose", "--angle-error", "0,2", "--shift-error", "0,3", "-o", tmp_path / "geo"
        ),
    )
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "geo").iterdir() if p.is_dir()) == [
        "angle_error_0",
        "angle_error_2",
        "shift_error_3",
    ]
    for axis in ("angle_error_deg", "shift_error_mm"):
        assert (tmp_path / "geo" / f"curve_{axis}.png").is_file()
    res = run("study", "noise", *_opts(tiny, "--methods", "mean", "--dose", "1e3", "-o", tmp_path / "noise"))
    assert res.exit_code == 0, res.output
    assert "dose" in (tmp_path / "noise" / "summary.md").read_text()


def test_cli_bad_input(tiny, tmp_path):
    assert_user_error(run("evaluate", *_opts(tiny, "--methods", "fit,magic", "-o", tmp_path / "a")), "unknown method")
    assert_user_error(
        run("study", "angles", *_opts(tiny, "--second-angle", "60,200", "-o", tmp_path / "b")), "[-180, 180]"
    )
    assert_user_error(
        run("study", "angles", *_opts(tiny, "--second-angle", "5", "-o", tmp_path / "b")), "same projection"
    )
    assert_user_error(run("study", "geometry", *_opts(tiny, "--angle-error", "x", "-o", tmp_path / "b")), "cannot read")
    bare = tmp_path / "nomasks"
    bare.mkdir()
    data = write_xfit_collection(tmp_path / "ct", 1)
    for f in data.glob("*_seg.nii.gz"):
        f.rename(bare / f.name.replace("_seg", "_x"))
    (bare / "x.txt").write_text("")
    for f in data.glob("*_ct.nii.gz"):
        f.rename(bare / f.name)
    res = run(
        "evaluate", "--prior", tiny["prior"], "--data", bare, "--methods", "mean", "--quiet", "-o", tmp_path / "c"
    )
    assert_user_error(res)
    # a tagged baseline without --checkpoint looks for a shipped variant (baseline-x2ct-cnn-nope.safetensors)
    assert_user_error(run("evaluate", *_opts(tiny, "--methods", "x2ct-cnn@nope", "-o", tmp_path / "d")), "none ships")
    assert_user_error(
        run("evaluate", *_opts(tiny, "--checkpoint", "ear=/nonexistent", "-o", tmp_path / "e")), "not among"
    )


def test_cases_in_two_processes_match_one(tiny, tmp_path):
    spec = _spec(tiny, methods=("mean",), phantoms=2)
    one = evaluate(spec, tmp_path / "one", progress=False)
    two = evaluate(spec, tmp_path / "two", workers=2, progress=False)
    assert [(r["case"], r["psnr_db"]) for r in one] == [(r["case"], r["psnr_db"]) for r in two]


def test_results_section_is_generated_from_run_folders(tiny, tmp_path):
    from xfit.studies.results import BEGIN, END, update_readme

    root = tmp_path / "docs" / "results"
    evaluate(_spec(tiny, methods=("mean",), phantoms=1), root / "ev", progress=False)
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{BEGIN}\nOLD-TEXT\n{END}\n\nafter\n")
    assert update_readme(readme, root)
    text = readme.read_text()
    assert "OLD-TEXT" not in text and text.endswith("after\n") and "prior mean volume (`mean`)" in text
    assert "wall time" in text and "docs/results/ev/panel.png" in text
    assert not update_readme(readme, root)  # idempotent
    assert run("results", "--readme", readme, "--results", root, "--check").exit_code == 0
    readme.write_text(f"{BEGIN}\n{END}\n")
    assert run("results", "--readme", readme, "--results", root, "--check").exit_code == 1
    assert run("results", "--readme", readme, "--results", root).exit_code == 0  # rewrites it
    assert run("results", "--readme", readme, "--results", root, "--check").exit_code == 0


def test_shape_only_and_single_view_baselines(tiny, tmp_path):
    """TransVert (shape, no CT) and IGCN (one view, shape) fill only the label columns."""
    from xfit.baselines import igcn
    from xfit.baselines.common import BaselineConfig, save_model
    from xfit.baselines.registry import build_model

    arch = {
        "transvert": {"enc": [4, 8], "map": 4, "dec": [4, 4], "disc": [4, 8]},
        "igcn": {"enc": [4, 8], "gcn": [8, 8], "gt_points": 200, "template_step": 1},
    }
    ckpts = {}
    for m, a in arch.items():
        views = {"detector": [32, 32], "pixel_spacing_mm": [3.0, 3.0], **({"angles_deg": [0.0]} if m == "igcn" else {})}
        cfg = BaselineConfig.from_dict({"method": m, "resolution": 16, "spacing_mm": 5.0, "arch": a, "views": views})
        torch.manual_seed(0)
        net = build_model(cfg).eval()
        if m == "igcn":
            crops = torch.zeros(2, 2, 16, 16, 16)
            crops[:, 0] = -0.6
            crops[:, :, 5:11, 4:12, 6:10] = 1.0  # a box vertebra and its mask
            net.set_template(*igcn.template_from_crops(crops, cfg))
        ckpts[m] = str(save_model(tmp_path / f"{m}.safetensors", net, cfg, {"steps": 0}))
    rows = evaluate(
        _spec(tiny, methods=("transvert", "igcn"), phantoms=1, checkpoints=ckpts), tmp_path / "ev", progress=False
    )
    for r in rows:
        assert math.isnan(r["psnr_db"]) and math.isnan(r["third_view_ncc"]), r["method"]
        assert math.isfinite(r["dice"]) and math.isfinite(r["seconds"])
    assert "| - |" in (tmp_path / "ev" / "summary.md").read_text()


def test_run_cases_adds_and_reruns_modes_without_touching_the_others(tmp_path):
    from xfit.studies.cases import drop_modes, run_cases

    calls = []

    def run_one(i, modes):
        calls.append((i, tuple(modes)))
        return {"case": i, "modes": {m: {"x": float(10 * i + len(calls))} for m in modes}}

    first = run_cases(tmp_path, 2, run_one, modes=["a", "b"])
    assert calls == [(0, ("a", "b")), (1, ("a", "b"))]
    assert run_cases(tmp_path, 2, run_one, modes=["a", "b"]) == first and len(calls) == 2  # resumed: nothing runs
    assert drop_modes(tmp_path, ["b"]) == 2
    again = run_cases(tmp_path, 2, run_one, modes=["a", "b", "c"])
    assert calls[2:] == [(0, ("b", "c")), (1, ("b", "c"))]
    for old, new in zip(first, again):
        assert new["modes"]["a"] == old["modes"]["a"] and new["modes"]["b"] != old["modes"]["b"]
        assert set(new["modes"]) == {"a", "b", "c"}


def test_folder_conditions_reads_only_the_names_a_sweep_writes(tmp_path):
    from xfit.studies.sweeps import folder_conditions

    for name in (
        "angle_60",
        "angle_060",
        "angle_nan",
        "angle_1e2",
        "shift_error_2",
        "angle_error_0.5",
        "dose_1e+06",
        "notes",
    ):
        (tmp_path / name).mkdir()
        (tmp_path / name / "settings.json").write_text("{}")
    (tmp_path / "angle_70").mkdir()  # no settings.json: not a run
    got = [(c.name, c.axis, c.value) for c in folder_conditions(tmp_path)]
    assert got == [
        ("angle_60", "second_angle_deg", 60.0),
        ("angle_error_0.5", "angle_error_deg", 0.5),
        ("shift_error_2", "shift_error_mm", 2.0),
        ("dose_1e+06", "photons", 1e6),
    ]
    from xfit.studies.sweeps import main as sweeps_main

    assert sweeps_main([str(tmp_path / "angle_60")]) == 2  # a settings.json that is not a run's: one line


def test_the_ceilings_fit_the_truth_by_adam_and_lbfgs_with_and_without_its_mask(tiny, tmp_path, monkeypatch):
    from xfit.fitting import invert

    calls = []
    real = invert.invert_volume
    # (is the truth's mask in the loss, keyword arguments)
    monkeypatch.setattr(invert, "invert_volume", lambda *a, **k: calls.append((a[2] is not None, k)) or real(*a, **k))
    monkeypatch.setattr(invert, "CEILING_STEPS", 4)  # read at each call: a cheap run of the same code
    monkeypatch.setattr(invert, "CEILING_LBFGS_STEPS", 3)
    methods = ("ceiling", "ceiling-lbfgs", "ceiling-hu")
    rows = evaluate(_spec(tiny, methods=methods, phantoms=1), tmp_path / "ev", progress=False)
    assert [r["method"] for r in rows] == list(methods)
    assert all(math.isfinite(r["psnr_db"]) and math.isfinite(r["dice"]) for r in rows)
    lbfgs = {"steps": 3, "optimizer": "lbfgs"}
    assert calls == [(True, {"steps": 4}), (True, lbfgs), (False, lbfgs)]
    assert "by L-BFGS" in (tmp_path / "ev" / "summary.md").read_text()
