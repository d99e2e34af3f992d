"""``xfit study radiographs`` resumes only a study of the same settings and code (``settings.json``)."""

from __future__ import annotations

import json

import pytest
from cli_helpers import assert_user_error, run

from xfit.errors import OutputExistsError
from xfit.studies import code_sha, radiographs
from xfit.studies.cases import open_study


def test_open_study_records_settings_and_refuses_other_ones(tmp_path):
    out = tmp_path / "study"
    s = {"steps": 10, "code": {"fitting": "a" * 64, "prior": "b" * 64}}
    open_study(out, s)
    assert json.loads((out / "settings.json").read_text()) == s
    (out / "case00.json").write_text(json.dumps({"modes": {}}))
    open_study(out, s)  # the same: resumed
    with pytest.raises(OutputExistsError, match=r"other settings \(steps\)"):
        open_study(out, {**s, "steps": 20})
    with pytest.raises(OutputExistsError, match=r"the code of fitting\)"):
        open_study(out, {**s, "code": {**s["code"], "fitting": "c" * 64}})
    open_study(out, {**s, "steps": 20}, force=True)  # afresh: the old cases are gone
    assert not (out / "case00.json").exists()
    assert json.loads((out / "settings.json").read_text())["steps"] == 20
    old = tmp_path / "old"  # cases of a study written before settings were recorded
    old.mkdir()
    (old / "case00.json").write_text(json.dumps({"modes": {}}))
    with pytest.raises(OutputExistsError, match="recorded no settings"):
        open_study(old, s)
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputExistsError, match="is a file"):
        open_study(tmp_path / "file", s)


def test_radiograph_study_refuses_a_resume_with_other_steps(tmp_path, tiny_prior_file, monkeypatch):
    calls = []

    def fake_case(i, out, prior, *, steps, modes, **kw):
        calls.append((i, steps, tuple(modes)))
        return {"case": i, "modes": {m: {"psnr_db": 20.0 + i} for m in modes}}

    monkeypatch.setattr(radiographs, "run_case", fake_case)
    prior = tiny_prior_file(torch_seed=1, n=300)
    out = tmp_path / "rs"
    radiographs.run_study(out, prior=prior, cases=2, steps=3, modes=["clicks"])
    meta = json.loads((out / "settings.json").read_text())
    parts = {k for k in meta["code"] if not k.endswith(code_sha.PLAIN)}  # a part's plain hash is no part
    assert meta["steps"] == 3 and parts == set(radiographs.CODE_PARTS) and len(meta["prior_sha256"]) == 64
    radiographs.run_study(out, prior=prior, cases=2, steps=3, modes=["clicks"])
    assert calls == [(0, 3, ("clicks",)), (1, 3, ("clicks",))]  # resumed: nothing ran again
    with pytest.raises(OutputExistsError, match=r"other settings \(steps\)"):
        radiographs.run_study(out, prior=prior, cases=2, steps=4, modes=["clicks"])
    radiographs.run_study(out, prior=prior, cases=2, steps=4, modes=["clicks"], force=True)
    assert calls[-2:] == [(0, 4, ("clicks",)), (1, 4, ("clicks",))]


def test_radiograph_study_cli_turns_a_changed_study_into_one_line(tmp_path, tiny_prior_file, monkeypatch):
    monkeypatch.setattr(
        radiographs, "run_case", lambda i, out, prior, *, modes, **kw: {"case": i, "modes": {m: {} for m in modes}}
    )
    prior = str(tiny_prior_file(torch_seed=1, n=300))
    out = str(tmp_path / "rs")
    args = ["study", "radiographs", "-o", out, "--prior", prior, "--cases", "1", "--modes", "clicks"]
    assert run(*args, "--steps", "2").exit_code == 0
    assert_user_error(run(*args, "--steps", "3"), "other settings (steps)")
    assert run(*args, "--steps", "3", "--force").exit_code == 0
    assert_user_error(run("study", "radiographs", "-o", out, "--prior", tmp_path / "none.safetensors"), "not found")
