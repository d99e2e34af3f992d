"""The code a run's rows were computed with (``settings.json`` ``code``): resume, reuse and merge
do not mix rows of other code."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from xfit.errors import OutputExistsError
from xfit.studies import code_sha
from xfit.studies import evaluate as ev
from xfit.studies.evaluate import EvalSpec, evaluate, method_parts

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_part_hashes_its_sources_and_changes_with_them(tmp_path, monkeypatch):
    pkg = tmp_path / "pkg"
    (pkg / "fitting").mkdir(parents=True)
    (pkg / "fitting" / "a.py").write_text("x = 1\n")
    (pkg / "fitting" / "notes.txt").write_text("not code")
    (pkg / "metrics.py").write_text("y = 2\n")
    monkeypatch.setattr(code_sha, "PACKAGE", pkg)
    before = code_sha.code_record(["fitting", "metrics.py", "torch"])
    assert set(before) == {"fitting", "metrics.py", "torch"} and all(len(v) == 64 for v in before.values())
    code_sha._sources_sha256.cache_clear()
    (pkg / "fitting" / "notes.txt").write_text("edited, still not code")
    assert code_sha.code_record(["fitting"])["fitting"] == before["fitting"]
    code_sha._sources_sha256.cache_clear()
    (pkg / "fitting" / "b.py").write_text("")  # a new module counts
    after = code_sha.code_record(["fitting", "metrics.py"])
    assert after["fitting"] != before["fitting"] and after["metrics.py"] == before["metrics.py"]
    assert code_sha.changed_parts(["fitting", "metrics.py"], before, after) == ["fitting"]
    assert code_sha.changed_parts(["metrics.py"], {}, after) == ["metrics.py"]  # nothing recorded: changed
    with pytest.raises(ValueError, match="nowhere"):
        code_sha.part_sha256("nowhere")


def test_each_method_depends_on_its_own_parts_and_every_part_exists():
    fit, mean, net = method_parts("fit"), method_parts("mean"), method_parts("x2ct-cnn@jitter")
    assert {"prior", "fitting", "baselines", "projector"} <= set(fit)
    assert {"prior", "fitting", "projector"} <= set(mean) and "baselines" not in mean
    assert "baselines" in net and not {"prior", "fitting"} & set(net)
    code = ev.method_code(("fit", "x2ct-cnn"))  # every part is a module or folder of the package
    assert set(code) == set(fit) | set(net)


def _rows(out: Path) -> list[dict]:
    return list(csv.DictReader((out / "cases.csv").open()))


def test_rows_of_other_code_are_neither_resumed_nor_reused(tmp_path, tiny_prior_file, monkeypatch):
    from tiny_models import untrained_x2ct_checkpoint

    ckpt = untrained_x2ct_checkpoint(tmp_path / "x2ct.safetensors")
    spec = EvalSpec(
        prior=str(tiny_prior_file(torch_seed=1, n=300)),
        methods=("mean", "x2ct-cnn"),
        checkpoints={"x2ct-cnn": str(ckpt)},
        phantoms=1,
        detector=32,
        pixel_spacing_mm=3.0,
        n_random=3,
    )
    old = tmp_path / "old"
    evaluate(spec, old, progress=False)
    meta = json.loads((old / "settings.json").read_text())
    assert meta["code"] == ev.method_code(spec.methods)
    evaluate(spec, old, progress=False)  # the same code: resumed, nothing to do
    meta["code"]["fitting"] = "0" * 64  # the rows of `mean` were computed by another fitting/
    (old / "settings.json").write_text(json.dumps(meta))
    with pytest.raises(OutputExistsError, match=r"code of mean \(fitting\) changed"):
        evaluate(spec, old, progress=False)
    calls = []
    real = ev.evaluate_case
    monkeypatch.setattr(ev, "evaluate_case", lambda s, i, m: (calls.append(tuple(m)), real(s, i, m))[1])
    evaluate(spec, tmp_path / "new", progress=False, reuse=[old])
    assert calls == [("mean",)]  # the baseline's row, whose code is unchanged, is reused
    assert json.loads((tmp_path / "new" / "settings.json").read_text())["reused_rows"] == {str(old): 1}
    shutil.copytree(old, tmp_path / "older")  # a folder written before xfit recorded code
    meta.pop("code")
    (tmp_path / "older" / "settings.json").write_text(json.dumps(meta))
    with pytest.raises(OutputExistsError, match="no code recorded"):
        evaluate(spec, tmp_path / "older", progress=False)
    calls.clear()
    evaluate(spec, tmp_path / "newer", progress=False, reuse=[tmp_path / "older"])
    assert calls == [("mean", "x2ct-cnn")]  # nothing reused
    assert len(_rows(tmp_path / "newer")) == 2
