"""The code a run's rows were computed with (``settings.json`` ``code``): resume, reuse and merge
do not mix rows of other code."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from xfit.errors import InputError, OutputExistsError
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
    # every row is scored on the prior's grid, its volume_view_ncc through the fit's footprint masks
    assert {"prior", "fitting", "projector", "metrics.py", "torch", "numpy"} <= set(mean)
    assert "baselines" not in mean and set(fit) == set(net) == set(mean) | {"baselines"}
    code = ev.method_code(("fit", "x2ct-cnn"))  # every part is a module or folder of the package
    assert set(code) == set(fit) | {"fitting" + code_sha.PLAIN} and len(set(code.values())) == len(code)


CONFIG = '''from dataclasses import dataclass, field

LIMIT = 3


@dataclass
class FitConfig:
    """Settings.

    Attributes:
        steps: steps (default {doc}).
    """

    steps: int = {steps}  # a comment
    names: list = field(default_factory=lambda: ["a"])

    def twice(self) -> int:
        return 2 * self.steps
'''


def test_the_fits_defaults_do_not_count_but_its_code_does(tmp_path, monkeypatch):
    pkg = tmp_path / "pkg"
    (pkg / "fitting").mkdir(parents=True)
    cfg = pkg / "fitting" / "config.py"
    monkeypatch.setattr(code_sha, "PACKAGE", pkg)

    def record(**fmt: object) -> dict[str, str]:
        cfg.write_text(CONFIG.format(**{"doc": 30, "steps": 30, **fmt}))
        code_sha._sources_sha256.cache_clear()
        return code_sha.code_record(["fitting"])

    base = record()
    plain_key = "fitting" + code_sha.PLAIN
    assert set(base) == {"fitting", plain_key} and base["fitting"] != base[plain_key]
    legacy = {"fitting": base[plain_key]}  # a record written before the defaults were left out
    assert code_sha.changed_parts(["fitting"], legacy, base) == []  # same sources: still matches
    upgraded = code_sha.upgrade_record(legacy)
    assert upgraded == base and code_sha.upgrade_record({"fitting": "0" * 64}) == {"fitting": "0" * 64}
    new_default = record(steps=20, doc=20)  # a new default (and its docstring): the fit rows record it
    assert new_default["fitting"] == base["fitting"] and new_default[plain_key] != base[plain_key]
    assert code_sha.changed_parts(["fitting"], upgraded, new_default) == []
    assert code_sha.changed_parts(["fitting"], legacy, new_default) == ["fitting"]  # not upgraded: stale
    assert code_sha.changed_parts([plain_key], {}, new_default) == []  # no part of its own
    for edit in ("LIMIT = 4", "return 3 * self.steps"):  # code outside the defaults counts
        cfg_text = CONFIG.format(doc=30, steps=30).replace("LIMIT = 3", edit).replace("return 2 * self.steps", edit)
        cfg.write_text(cfg_text)
        code_sha._sources_sha256.cache_clear()
        assert code_sha.code_record(["fitting"])["fitting"] != base["fitting"]
    cfg.write_text("x = 1\n")
    code_sha._sources_sha256.cache_clear()
    with pytest.raises(ValueError, match="no class FitConfig"):
        code_sha.code_record(["fitting"])


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
    calls = []
    real = ev.evaluate_case
    monkeypatch.setattr(ev, "evaluate_case", lambda s, i, m: (calls.append(tuple(m)), real(s, i, m))[1])
    evaluate(spec, old, progress=False)  # the same code: resumed, nothing to do
    evaluate(dataclasses.replace(spec, methods=("x2ct-cnn",)), old, progress=False)  # fewer methods: the same
    assert calls == [] and json.loads((old / "settings.json").read_text())["code"] == meta["code"]
    meta["code"]["baselines"] = "0" * 64  # the baseline's row was computed by another baselines/
    (old / "settings.json").write_text(json.dumps(meta))
    with pytest.raises(OutputExistsError, match=r"code of x2ct-cnn \(baselines\) changed.*--reuse"):
        evaluate(spec, old, progress=False)
    evaluate(spec, tmp_path / "new", progress=False, reuse=[old])
    assert calls == [("x2ct-cnn",)]  # the row of `mean`, whose code is unchanged, is reused
    assert json.loads((tmp_path / "new" / "settings.json").read_text())["reused_rows"] == {str(old): 1}
    shutil.copytree(old, tmp_path / "older")  # a folder written before xfit recorded code
    meta.pop("code")
    (tmp_path / "older" / "settings.json").write_text(json.dumps(meta))
    with pytest.raises(
        OutputExistsError,
        match=r"record no code .*cannot be resumed; use another folder",
    ):
        evaluate(spec, tmp_path / "older", progress=False)
    calls.clear()
    evaluate(spec, tmp_path / "newer", progress=False, reuse=[tmp_path / "older"])
    assert calls == [("mean", "x2ct-cnn")]  # nothing reused
    assert len(_rows(tmp_path / "newer")) == 2


@pytest.mark.parametrize("code", [None, [], {"prior": 5}, {"prior": None}, "abc"])
def test_a_mistyped_code_record_is_one_line(tmp_path, code):
    (tmp_path / "settings.json").write_text(json.dumps({"key": {}, "methods": ["mean"], "prior": "p", "code": code}))
    with pytest.raises(InputError, match="mistyped code"):
        ev.read_settings(tmp_path)


def test_a_sweep_of_conditions_computed_by_other_code_is_refused(tmp_path):
    from xfit.studies.sweeps import Condition, check_sweep_runs

    conds = [Condition("angle_60", "second_angle_deg", 60.0, ()), Condition("angle_90", "second_angle_deg", 90.0, ())]
    keys = [{"angles": [0.0, 60.0]}, {"angles": [0.0, 90.0]}]
    code = ev.method_code(["mean", "x2ct-cnn"])
    metas = [{"methods": ["mean", "x2ct-cnn"], "code": code}, {"methods": ["mean"], "code": dict(code)}]
    check_sweep_runs(tmp_path, conds, keys, metas)  # the same code
    check_sweep_runs(tmp_path, conds, keys, [{"methods": ["mean"]}] * 2)  # neither records code (older sweeps)
    metas[1]["code"]["baselines"] = "0" * 64  # a part the shared method does not depend on
    check_sweep_runs(tmp_path, conds, keys, metas)
    metas[1]["code"]["fitting"] = "0" * 64
    with pytest.raises(InputError, match=r"other code \(mean \(fitting\)\)"):
        check_sweep_runs(tmp_path, conds, keys, metas)


def test_a_change_declared_neutral_keeps_older_records_matching_and_upgrades_them(tmp_path, monkeypatch):
    """A record of the sources before a change that ``NEUTRAL`` declares rows-neutral matches the
    sources after it (through a chain of such changes too) and is rewritten by ``upgrade_record``;
    any other change still counts, and so does the same change undeclared."""
    pkg = tmp_path / "pkg"
    (pkg / "fitting").mkdir(parents=True)
    monkeypatch.setattr(code_sha, "PACKAGE", pkg)
    monkeypatch.setattr(code_sha, "NEUTRAL", {})
    records = []
    for text in ("x = 1\n", "x = 1  # same arithmetic\n", "x = 1  # and again\n", "x = 2\n"):
        code_sha._sources_sha256.cache_clear()
        (pkg / "fitting" / "a.py").write_text(text)
        records.append(code_sha.code_record(["fitting", "torch"]))
    v0, v1, v2, v3 = (r["fitting"] for r in records)
    assert len({v0, v1, v2, v3}) == 4
    # undeclared, every edit counts (the sources are now those of v3)
    assert code_sha.changed_parts(["fitting"], records[0], records[2]) == ["fitting"]
    code_sha.NEUTRAL["fitting"] = {v1: v0, v2: v1}  # two verified refactors
    assert code_sha.equivalent_shas("fitting", v2) == [v2, v1, v0]
    assert code_sha.changed_parts(["fitting", "torch"], records[0], records[2]) == []
    assert code_sha.changed_parts(["fitting"], records[2], records[0]) == ["fitting"]  # not backwards
    assert code_sha.changed_parts(["fitting"], records[0], records[3]) == ["fitting"]  # a real change
    # upgrade: the sources on disk are v3's, so nothing is rewritten; then back at v2's
    assert code_sha.upgrade_record(records[0]) == records[0]
    code_sha._sources_sha256.cache_clear()
    (pkg / "fitting" / "a.py").write_text("x = 1  # and again\n")
    assert code_sha.upgrade_record(records[0]) == records[2]
    assert code_sha.upgrade_record({"fitting": "f" * 64}) == {"fitting": "f" * 64}  # unknown: kept


def test_the_declared_neutral_changes_are_well_formed():
    """Each entry of ``NEUTRAL`` maps one record of a real part to another (64 hex digits, not
    itself), and no chain loops."""
    parts = set(code_sha.COMMON_PARTS) | set(code_sha.BASELINE_PARTS)
    for part, pairs in code_sha.NEUTRAL.items():
        assert part in parts and part not in code_sha.LIBRARIES
        for after, before in pairs.items():
            assert after != before
            assert all(len(x) == 64 and int(x, 16) >= 0 for x in (after, before))
            chain = code_sha.equivalent_shas(part, after)
            assert chain[:2] == [after, before] and len(chain) == len(set(chain))
