"""``--shard K/N`` of ``xfit evaluate`` and ``xfit study`` and ``xfit merge`` (issue 27, point 4):
shards merged give the folder one process writes, byte for byte; bad shard specs and shards that
do not make one run are one line, exit 2, nothing written.

The measured seconds differ between any two runs, so the byte-for-byte tests freeze the clock
of :mod:`xfit.studies.evaluate` (every ``seconds`` cell and ``wall_seconds`` come from it)."""

import json
import os
import shutil
import socket
import types
from pathlib import Path

import pytest
from cli_helpers import assert_user_error, run

from xfit.errors import InputError
from xfit.studies import evaluate as ev
from xfit.studies.evaluate import EvalSpec, evaluate, parse_shard, shard_cases
from xfit.studies.shards import merge

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_prior_file):
    """A tiny prior and a 3-step fit config."""
    d = tmp_path_factory.mktemp("shards")
    prior = tiny_prior_file(torch_seed=1, n=300)
    (d / "fit.yaml").write_text("steps: 3\nrestarts: 1\ncoarse_fraction: 0.0\n")
    return {"prior": prior, "fit": d / "fit.yaml"}


@pytest.fixture
def frozen_clock(monkeypatch):
    """Every time evaluate measures is 0 s (the only bytes two runs of one command may differ in)."""
    monkeypatch.setattr(ev, "time", types.SimpleNamespace(perf_counter=lambda: 0.0))


def _spec(tiny, **kw) -> EvalSpec:
    base = dict(
        prior=str(tiny["prior"]),
        methods=("fit", "mean", "best-of-n"),
        phantoms=4,
        detector=32,
        pixel_spacing_mm=3.0,
        n_random=2,
        fit_config=str(tiny["fit"]),
    )
    return EvalSpec(**{**base, **kw})


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_same_folder(a: Path, b: Path) -> None:
    fa, fb = _files(a), _files(b)
    assert sorted(fa) == sorted(fb)
    assert [k for k in fa if fa[k] != fb[k]] == []


def _opts(tiny, *extra):
    return [
        "--prior",
        tiny["prior"],
        "--phantoms",
        "3",
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


# ----------------------------------------------------------------------------- the split


def test_parse_shard_and_the_blocks():
    assert parse_shard("1/1") == (1, 1) and parse_shard("3/4") == (3, 4)
    for bad in (
        "0/0",
        "3/2",
        "a/b",
        "1/0",
        "-1/2",
        "0/2",
        "1/-2",
        " 1/2",
        "1/2/3",
        "1",
        "1.0/2",
        "",
        "/",
        "1/",
        "٣/٤",
        "9" * 12 + "/1",
        "1/100001",
    ):
        with pytest.raises(InputError, match="--shard"):
            parse_shard(bad)
    names = [f"c{i}" for i in range(5)]
    for n in (1, 2, 3, 5):  # every case once, in order, in blocks that differ by at most one
        got = [shard_cases(names, (k, n)) for k in range(1, n + 1)]
        assert [c for block in got for c in block] == list(enumerate(names))
        assert max(map(len, got)) - min(map(len, got)) <= 1
    for k in (1, 6):  # whichever shard of too many
        with pytest.raises(InputError, match="at most 5 shards"):
            shard_cases(names, (k, 6))


# ----------------------------------------------------------------------------- byte for byte


def test_evaluate_in_2_and_3_shards_merges_to_the_single_run_byte_for_byte(tiny, tmp_path, frozen_clock):
    spec = _spec(tiny)
    evaluate(spec, tmp_path / "one", progress=False)
    for n in (2, 3):
        for k in range(1, n + 1):
            evaluate(spec, tmp_path / f"s{n}_{k}", progress=False, shard=(k, n))
        shards = [tmp_path / f"s{n}_{k}" for k in range(n, 0, -1)]  # in any order
        merge(shards, tmp_path / f"merged{n}")
        assert_same_folder(tmp_path / "one", tmp_path / f"merged{n}")
    meta = json.loads((tmp_path / "s3_2" / "settings.json").read_text())
    assert meta["shard"] == {"index": 2, "count": 3, "cases": ["phantom0001"]}
    assert "shard 2/3" in (tmp_path / "s3_2" / "summary.md").read_text()
    # the merged folder is a run folder: the same command resumes it with nothing to do
    before = _files(tmp_path / "merged3")
    evaluate(spec, tmp_path / "merged3", progress=False)
    assert _files(tmp_path / "merged3") == before


def test_cli_shards_and_merge_of_evaluate_and_of_a_study(tiny, tmp_path, frozen_clock):
    res = run("evaluate", *_opts(tiny, "--methods", "mean,best-of-n", "-o", tmp_path / "one"))
    assert res.exit_code == 0, res.output
    for k in (1, 2):
        res = run(
            "evaluate", *_opts(tiny, "--methods", "mean,best-of-n", "--shard", f"{k}/2", "-o", tmp_path / f"ev{k}")
        )
        assert res.exit_code == 0, res.output
    res = run("merge", tmp_path / "ev1", tmp_path / "ev2", "-o", tmp_path / "merged")
    assert res.exit_code == 0, res.output
    assert_same_folder(tmp_path / "one", tmp_path / "merged")
    # a study, its values not in order (the summary lists the conditions by value either way)
    study = ["study", "noise", "--dose", "1e4,1e3", "--methods", "mean"]
    res = run(*study, *_opts(tiny, "-o", tmp_path / "study"))
    assert res.exit_code == 0, res.output
    for k in (1, 2):
        res = run(*study, *_opts(tiny, "--shard", f"{k}/2", "-o", tmp_path / f"st{k}"))
        assert res.exit_code == 0, res.output
        assert "xfit merge" in res.output and not (tmp_path / f"st{k}" / "curve.csv").exists()
    res = run("merge", tmp_path / "st2", tmp_path / "st1", "-o", tmp_path / "study_merged")
    assert res.exit_code == 0, res.output
    assert_same_folder(tmp_path / "study", tmp_path / "study_merged")
    assert (tmp_path / "study_merged" / "curve.csv").is_file()


def test_the_study_summary_lists_conditions_by_value_whatever_their_order(tiny, tmp_path, frozen_clock):
    """Changed with the shards (a merged study cannot know the order the values were typed in):
    ``summary.md`` lists the wall times by axis and value, as ``python -m xfit.studies.sweeps``
    always did; before, a study in the order given (1e4 before 1e3)."""
    for name, doses in (("down", "1e4,1e3"), ("up", "1e3,1e4")):
        res = run(
            "study",
            "noise",
            "--dose",
            doses,
            "--methods",
            "mean",
            *_opts(tiny, "--phantoms", "1", "-o", tmp_path / name),
        )
        assert res.exit_code == 0, res.output
    text = (tmp_path / "down" / "summary.md").read_text()
    assert text == (tmp_path / "up" / "summary.md").read_text()
    assert text.index("dose_1000 ") < text.index("dose_10000 ")


# ----------------------------------------------------------------------------- refused


@pytest.mark.parametrize("bad", ["0/0", "3/2", "a/b", "1/0", "-1/2", "0/2", "2", "1/2/2"])
def test_bad_shard_specs_are_one_line_and_write_nothing(tiny, tmp_path, bad):
    for cmd in (["evaluate"], ["study", "noise", "--dose", "1e3"]):
        assert_user_error(
            run(*cmd, *_opts(tiny, "--methods", "mean", "--shard", bad, "-o", tmp_path / "out")), "--shard"
        )
        assert not (tmp_path / "out").exists()


def test_more_shards_than_cases_is_refused_before_writing(tiny, tmp_path):
    assert_user_error(
        run("evaluate", *_opts(tiny, "--methods", "mean", "--shard", "4/4", "-o", tmp_path / "out")),
        "4 shards for 3 case(s)",
        "at most 3",
    )
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def shards(tiny, tmp_path_factory):
    """Shards 1/2 and 2/2 of ``mean`` on three phantoms, shard 1/3, a shard 2/2 of other settings
    and a whole run."""
    d = tmp_path_factory.mktemp("made")
    spec = _spec(tiny, methods=("mean",), phantoms=3)
    for k in (1, 2):
        evaluate(spec, d / f"s{k}", progress=False, shard=(k, 2))
    evaluate(spec, d / "third1", progress=False, shard=(1, 3))
    evaluate(_spec(tiny, methods=("mean",), phantoms=3, detector=24), d / "other2", progress=False, shard=(2, 2))
    evaluate(_spec(tiny, methods=("mean", "best-of-n"), phantoms=3), d / "more2", progress=False, shard=(2, 2))
    evaluate(spec, d / "whole", progress=False)
    return d


def _refused(shard_dirs, out, *words, extra=()):
    assert_user_error(run("merge", *shard_dirs, "-o", out, *extra), *words)


def test_merge_refuses_shards_that_do_not_make_one_run(shards, tmp_path):
    s1, s2 = shards / "s1", shards / "s2"
    out = tmp_path / "out"
    cases = [
        ([s1, shards / "other2"], "other settings", "detector"),
        ([s1, shards / "more2"], "other methods"),
        ([s1], "2/2 missing"),
        ([s1, s1, s2], "both shard 1/2"),
        ([s1, shards / "third1"], "different splits"),
        ([s1, shards / "whole"], "whole run"),
        ([s1, tmp_path / "nowhere"], "not found"),
    ]
    for dirs, *words in cases:
        _refused(dirs, out, *words)
        assert not out.exists(), dirs
    # a shard computed by other code, or by an xfit that recorded none
    for name, edit, words in (
        ("code2", lambda m: {**m, "code": {**m["code"], "fitting": "0" * 64}}, ("code of mean (fitting) differs",)),
        ("bare2", lambda m: {k: v for k, v in m.items() if k != "code"}, ("no code recorded",)),
    ):
        bad = tmp_path / name
        shutil.copytree(s2, bad)
        meta = json.loads((bad / "settings.json").read_text())
        (bad / "settings.json").write_text(json.dumps(edit(meta)))
        _refused([s1, bad], out, *words)
        assert not out.exists()
    # a shard that has not finished (a row missing), or is damaged
    for name, edit, word in (
        ("cut", lambda t: t.rstrip("\n").rsplit("\n", 1)[0] + "\n", "not finished"),
        ("torn", lambda t: t.rstrip("\n")[:-3], "torn"),
    ):
        bad = tmp_path / name
        shutil.copytree(s2, bad)
        (bad / "cases.csv").write_text(edit((bad / "cases.csv").read_text()))
        _refused([s1, bad], out, word)
        assert not out.exists()


def test_merge_refuses_a_shard_being_written(shards, tmp_path):
    busy = tmp_path / "busy"
    shutil.copytree(shards / "s2", busy)
    (busy / ".lock").write_text(f"{os.getpid()} {socket.gethostname()}\n")  # this process runs
    _refused([shards / "s1", busy], tmp_path / "out", "being written")
    assert not (tmp_path / "out").exists()
    (busy / ".lock").write_text(f"{2**22 + 12345} {socket.gethostname()}\n")  # no such process: left by a crash
    res = run("merge", shards / "s1", busy, "-o", tmp_path / "out")
    assert res.exit_code == 0, res.output


def test_merge_output_rules(shards, tmp_path):
    s1, s2 = shards / "s1", shards / "s2"
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    _refused([s1, s2], out, "--force")
    assert (out / "keep.txt").read_text() == "old"
    _refused([s1, s2], s1 / "merged", "shard folder")
    assert not (s1 / "merged").exists()
    res = run("merge", s1, s2, "-o", out, "--force")
    assert res.exit_code == 0, res.output
    assert not (out / "keep.txt").exists() and (out / "cases.csv").is_file()


def test_merge_refuses_a_mix_of_runs_and_studies_and_studies_of_other_conditions(tiny, shards, tmp_path):
    for k, doses in ((1, "1e3"), (2, "1e4")):
        res = run(
            "study",
            "noise",
            "--dose",
            doses,
            *_opts(tiny, "--methods", "mean", "--shard", f"{k}/2", "-o", tmp_path / f"st{k}"),
        )
        assert res.exit_code == 0, res.output
    _refused([tmp_path / "st1", tmp_path / "st2"], tmp_path / "out", "other conditions")
    _refused([shards / "s1", tmp_path / "st2"], tmp_path / "out", "not an evaluate run folder")
    assert not (tmp_path / "out").exists()


def test_a_shard_folder_resumes_only_as_its_shard(tiny, shards, tmp_path):
    s1 = tmp_path / "s1"
    shutil.copytree(shards / "s1", s1)
    base = _opts(tiny, "--methods", "mean", "-o", s1)
    assert_user_error(run("evaluate", *base, "--shard", "2/2"), "shard 1/2", "one folder per shard")
    assert_user_error(run("evaluate", *base), "shard 1/2", "--shard 1/2")
    assert_user_error(
        run("evaluate", *_opts(tiny, "--methods", "mean", "--shard", "1/2", "-o", shards / "whole")), "a whole run"
    )
    res = run("evaluate", *base, "--shard", "1/2")
    assert res.exit_code == 0, res.output


def test_a_damaged_shard_entry_is_one_line(shards, tmp_path):
    for entry in (
        {"index": 3, "count": 2, "cases": ["phantom0000"]},
        {"index": 1, "count": 2},
        {"index": 1, "count": 2, "cases": []},
        {"index": True, "count": 2, "cases": ["phantom0000"]},
        {"index": 1, "count": 2, "cases": ["phantom0002"]},
        [1, 2],
    ):
        bad = tmp_path / "bad"
        shutil.rmtree(bad, ignore_errors=True)
        shutil.copytree(shards / "s1", bad)
        meta = json.loads((bad / "settings.json").read_text())
        meta["shard"] = entry
        (bad / "settings.json").write_text(json.dumps(meta))
        _refused([bad, shards / "s2"], tmp_path / "out", "damaged")
        assert not (tmp_path / "out").exists()
