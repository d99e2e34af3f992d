"""Reliability at the edges (issue 12): whole-folder outputs, strict inputs, every error one line,
checks before work. One section per group of the issue; each test can fail."""

import errno
import json
import os
import warnings

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import xfit.io as xio
from xfit.cli import main
from xfit.devices import check_device
from xfit.errors import GeometryError, InputError, OutputError, OutputExistsError
from xfit.fitting import load_fit_config
from xfit.geometry import View, validate_sidecar
from xfit.io import (
    atomic_folder,
    check_output_file,
    check_output_folder,
    parse_json_strict,
    parse_yaml,
    read_xray,
    read_yaml_mapping,
    write_xray,
)
from xfit.prior.config import PriorConfig, load_config

HAS_CUDA = torch.cuda.is_available()


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_user_error(res, *words):
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    lines = [
        ln
        for ln in res.stderr.splitlines()
        if ln.strip() and not ln.startswith("xfit: warning") and "it/s]" not in ln and "%|" not in ln
    ]  # progress bars
    assert len(lines) == 1 and lines[0].startswith("xfit: error:"), res.stderr
    assert "Traceback" not in res.output
    for w in words:
        assert w.lower() in lines[0].lower(), lines[0]
    return lines[0]


def no_temp_left(folder):
    """No temporary or replaced sibling folder of an atomic_folder write is left behind."""
    return not [p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


@pytest.fixture(scope="module")
def ct(tmp_path_factory):
    out = tmp_path_factory.mktemp("ct")
    res = run("phantoms", out / "ph", "-n", 1, "--size", 24, "--spacing", 3.0, "--seed", 1)
    assert res.exit_code == 0, res.output
    return out / "ph" / "case0000_ct.nii.gz"


@pytest.fixture(scope="module")
def prior_path(tiny_prior_file):
    return tiny_prior_file()


@pytest.fixture()
def xray_pair(tmp_path):
    """A valid AP/LAT pair written by write_xray (PNG + sidecar) in tmp_path/xr."""
    folder = tmp_path / "xr"
    folder.mkdir()
    for name, angle in (("ap", 0.0), ("lat", 90.0)):
        view = View(angle_deg=angle, shape=(16, 16), pixel_spacing_mm=(2.0, 2.0))
        write_xray(folder / f"{name}.png", np.linspace(0, 5, 256).reshape(16, 16), view)
    return folder


# ============================================================================ 1. silent wrong results


@pytest.mark.parametrize(
    "key,value,words",
    [
        ("flip_lr", "false", ("flip_lr", "boolean")),
        ("invert", "false", ("invert", "boolean")),
        ("flip_lr", 0, ("flip_lr",)),
        ("angle_deg", True, ("angle_deg", "number")),
        ("angle_deg", 1e308, ("angle_deg", "360")),
        ("sdd_mm", "1800", ("sdd_mm", "number")),
        ("sdd_mm", 1e9, ("sdd_mm",)),
        ("pixel_spacing_mm", [0.5, True], ("pixel_spacing_mm",)),
        ("line_integral_scale", -1, ("line_integral_scale",)),
        ("projection", "Cone", ("projection",)),
        ("shape", [3, 3], ("shape", "differs")),
        ("angel_deg", 0, ("angel_deg",)),
    ],
)
def test_sidecar_types_are_strict(xray_pair, key, value, words):
    side = xray_pair / "ap.json"
    data = json.loads(side.read_text())
    data[key] = value
    side.write_text(json.dumps(data))
    with pytest.raises((GeometryError, InputError)) as info:
        read_xray(xray_pair / "ap.png")
    msg = str(info.value)
    assert "ap.json" in msg and all(w.lower() in msg.lower() for w in words), msg


def test_sidecar_true_booleans_still_work(xray_pair):
    side = xray_pair / "ap.json"
    plain = read_xray(xray_pair / "ap.png").image
    data = json.loads(side.read_text())
    side.write_text(json.dumps({**data, "flip_lr": True, "invert": False}))
    assert np.allclose(read_xray(xray_pair / "ap.png").image, plain[:, ::-1])
    side.write_text(json.dumps({**data, "flip_lr": None, "shape": [16, 16]}))  # null = not given
    assert np.allclose(read_xray(xray_pair / "ap.png").image, plain)


@pytest.mark.parametrize(
    "text,words",
    [
        ('{"angle_deg": NaN}', ("nan",)),
        ('{"angle_deg": Infinity}', ("infinity",)),
        ('{"angle_deg": 1e400}', ("finite",)),  # json reads 1e400 as inf
        ('{"flip_lr": false, "flip_lr": true}', ("twice",)),
        ("[" * 100000 + "]" * 100000, ("nested",)),
    ],
)
def test_sidecar_json_is_strict(xray_pair, text, words):
    (xray_pair / "ap.json").write_text(text)
    with pytest.raises((GeometryError, InputError)) as info:
        read_xray(xray_pair / "ap.png")
    assert all(w in str(info.value).lower() for w in words), str(info.value)


def test_huge_sidecar_refused(xray_pair):
    (xray_pair / "ap.json").write_text('{"angle_deg": 0' + " " * (xio.MAX_SMALL_FILE_BYTES + 1) + "}")
    with pytest.raises(InputError, match="too large"):
        read_xray(xray_pair / "ap.png")


def test_sample_truncation_nan_and_json(tmp_path, prior_path):
    res = run("sample", prior_path, "-n", 1, "-o", tmp_path / "s", "--truncation", "nan")
    assert_user_error(res, "truncation", "finite")
    assert not (tmp_path / "s").exists()
    from xfit.prior.sample import sample_prior

    with pytest.raises(InputError, match="truncation"):
        sample_prior(prior_path, 1, tmp_path / "s2", truncation_psi=float("nan"))
    assert not (tmp_path / "s2").exists()
    assert run("sample", prior_path, "-n", 1, "-o", tmp_path / "s3", "--truncation", 0.5).exit_code == 0
    record = parse_json_strict((tmp_path / "s3" / "samples.json").read_text())  # valid, strict JSON
    assert record["truncation_psi"] == 0.5


def test_sample_refuses_prior_that_generates_nan(tmp_path, prior_path):
    from xfit.errors import CheckpointError
    from xfit.prior.checkpoint import load_prior
    from xfit.prior.sample import sample_prior

    prior = load_prior(prior_path)
    with torch.no_grad():
        next(p for p in prior.G.synthesis.parameters()).fill_(float("nan"))
    with pytest.raises(CheckpointError, match="NaN"):
        sample_prior(prior, 2, tmp_path / "s")
    assert not (tmp_path / "s").exists() and no_temp_left(tmp_path)


@pytest.mark.parametrize(
    "text,words",
    [
        ("background: 'false'\n", ("background", "true, false or auto")),
        ("refine_pose: yes\n", ("refine_pose",)),  # YAML 1.1 'yes' is not a boolean here
        ("steps: true\n", ("steps", "integer")),
        ("steps: 2.5\n", ("steps",)),
        ("lr: .nan\n", ("lr", "finite")),
        ("lr: 1e39\n", ("lr",)),
        ("restarts: 100000\n", ("restarts", "1024")),
        ("scales: [1, true]\n", ("scales",)),
        ("scales: [1.5]\n", ("scales",)),
        ("step_mm: .inf\n", ("step_mm",)),
        ("max_divergences: true\n", ("max_divergences",)),
        ("stepz: 3\n", ("stepz",)),
        ("1: 2\nfoo: 3\n", ("1", "foo")),  # mixed key types: named, not a TypeError
        ("steps: 3\nsteps: 4\n", ("twice",)),
    ],
)
def test_fit_config_schema(tmp_path, text, words):
    path = tmp_path / "fit.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        load_fit_config(path)
    msg = str(info.value)
    assert "fit.yaml" in msg and all(w.lower() in msg.lower() for w in words), msg


def test_fit_config_yaml12_floats(tmp_path):
    path = tmp_path / "fit.yaml"
    path.write_text("lr: 1e-2\nrefine_pose: true\n")  # PyYAML alone reads 1e-2 as a string
    cfg = load_fit_config(path)
    assert cfg.lr == 0.01 and cfg.refine_pose is True


@pytest.mark.parametrize(
    "change,words",
    [
        ({"resolution": "64"}, ("resolution", "integer")),
        ({"resolution": True}, ("resolution",)),
        ({"resolution": 2**20}, ("resolution",)),
        ({"spacing_mm": float("inf")}, ("spacing_mm", "finite")),
        ({"z_dim": 10**9}, ("z_dim",)),
        ({"name": ["x"]}, ("name",)),
        ({"training": {"augment": {"flip_lr": "no"}}}, ("flip_lr", "true or false")),
        ({"training": {"seed": -1}}, ("seed",)),
        ({"training": {"vertebra_labels": [10**6]}}, ("vertebra_labels",)),
        ({3: 1, "colour": 2}, ("colour",)),
    ],
)
def test_prior_config_schema(change, words):
    d = load_config("tiny").to_dict()
    for k, v in change.items():
        if isinstance(v, dict) and isinstance(d.get(k), dict):
            for k2, v2 in v.items():
                d[k][k2] = {**d[k][k2], **v2} if isinstance(v2, dict) else v2
        else:
            d[k] = v
    with pytest.raises(InputError) as info:
        PriorConfig.from_dict(d)
    assert all(w.lower() in str(info.value).lower() for w in words), str(info.value)


def test_prior_config_roundtrip_through_json_still_works():
    cfg = load_config("tiny")
    assert PriorConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg  # "4": width keys


# ============================================================================ 2. outputs as a unit


def test_atomic_folder_new_replace_and_failure(tmp_path):
    out = tmp_path / "out"
    with atomic_folder(out) as tmp:
        assert tmp.parent == out.parent and tmp.is_dir() and not out.exists()
        (tmp / "a.txt").write_text("1")
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"]
    with pytest.raises(OutputExistsError, match="--force"):
        with atomic_folder(out):
            raise AssertionError("not reached")
    with pytest.raises(RuntimeError):
        with atomic_folder(out, force=True) as tmp:
            (tmp / "b.txt").write_text("2")
            raise RuntimeError("boom")
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"]  # the old folder, untouched
    with pytest.raises(KeyboardInterrupt):
        with atomic_folder(out, force=True) as tmp:
            (tmp / "b.txt").write_text("2")
            raise KeyboardInterrupt
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"]
    with atomic_folder(out, force=True) as tmp:
        (tmp / "b.txt").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]  # replaced as a whole: no stale a.txt
    assert no_temp_left(tmp_path)
    (tmp_path / "empty").mkdir()
    with atomic_folder(tmp_path / "empty") as tmp:  # an empty folder is free without force
        (tmp / "c.txt").write_text("3")
    assert (tmp_path / "empty" / "c.txt").exists()


def test_atomic_folder_failure_removes_parents_it_created(tmp_path):
    (tmp_path / "keep").mkdir()
    with pytest.raises(RuntimeError):
        with atomic_folder(tmp_path / "a" / "b" / "out") as tmp:
            (tmp / "x").write_text("x")
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep"]


def test_atomic_folder_rename_failure_restores_old(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    real_rename = os.rename

    def rename(src, dst):
        if ".tmp-" in str(src):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OutputError, match="out.*No space"):
        with atomic_folder(out, force=True) as tmp:
            (tmp / "new.txt").write_text("new")
    monkeypatch.undo()
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"] and no_temp_left(tmp_path)


def _fail_after_first_file(monkeypatch, exc):
    """Make xfit.io.xray.write_png16 raise ``exc`` on its second call (between two files of a folder)."""
    real = xio.write_png16
    calls = []

    def writer(*a, **k):
        calls.append(a[0])
        if len(calls) > 1:
            raise exc
        return real(*a, **k)

    monkeypatch.setattr(xio.xray, "write_png16", writer)  # write_xray looks it up in xfit.io.xray
    return calls


@pytest.mark.parametrize(
    "exc,code",
    [
        (RuntimeError("injected fault"), None),
        (KeyboardInterrupt(), 130),
        (OSError(errno.EROFS, "Read-only file system"), 2),
    ],
)
def test_fault_between_files_leaves_folder_whole_or_absent(ct, tmp_path, monkeypatch, exc, code):
    out = tmp_path / "xr"
    # a fresh folder: absent after the fault
    calls = _fail_after_first_file(monkeypatch, exc)
    res = run("simulate", ct, "--angles", "0,90,45", "-o", out, "--detector", 16)
    assert len(calls) == 2  # the fault struck between two files
    assert not out.exists() and no_temp_left(tmp_path)
    if code is not None:
        assert res.exit_code == code
    if code == 2:
        assert_user_error(res, "read-only", str(out.name))
    # an existing folder with --force: left exactly as it was
    monkeypatch.undo()
    assert run("simulate", ct, "--angles", "0,90,45", "-o", out, "--detector", 16).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    calls = _fail_after_first_file(monkeypatch, exc)
    run("simulate", ct, "--angles", "0,90", "-o", out, "--detector", 24, "--force")
    assert len(calls) == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert no_temp_left(tmp_path)


def test_force_leaves_no_stale_files(ct, tmp_path):
    out = tmp_path / "xr"
    assert run("simulate", ct, "--angles", "0,90,45", "-o", out, "--detector", 16).exit_code == 0
    assert (out / "view45.png").exists()
    assert run("simulate", ct, "--angles", "0,90", "-o", out, "--detector", 16, "--force").exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "ap.json",
        "ap.png",
        "lat.json",
        "lat.png",
        "simulate.json",
        "views.png",
    ]
    assert no_temp_left(tmp_path)


def test_phantoms_and_sample_write_whole_folders(tmp_path, prior_path, monkeypatch):
    import xfit.prior.sample as S

    def boom(*a, **k):
        raise RuntimeError("montage failed")

    monkeypatch.setattr("xfit.preview.volumes_montage", boom)
    with pytest.raises(RuntimeError):
        S.sample_prior(prior_path, 2, tmp_path / "s")
    assert not (tmp_path / "s").exists() and no_temp_left(tmp_path)
    monkeypatch.undo()
    assert run("sample", prior_path, "-n", 3, "-o", tmp_path / "s").exit_code == 0
    assert run("sample", prior_path, "-n", 1, "-o", tmp_path / "s", "--force").exit_code == 0
    assert not (tmp_path / "s" / "sample002_ct.nii.gz").exists()  # no stale sample of the first run
    assert run("phantoms", tmp_path / "ph", "-n", 2, "--size", 16, "--spacing", 4).exit_code == 0
    assert run("phantoms", tmp_path / "ph", "-n", 1, "--size", 16, "--spacing", 4, "--force").exit_code == 0
    assert not (tmp_path / "ph" / "case0001_ct.nii.gz").exists()
    assert no_temp_left(tmp_path)


# ============================================================================ 3. errors as one line


BAD_DEVICES = ["tpu9", "meta", "cuda:x", "cpu:3"] + ([] if HAS_CUDA else ["cuda", "cuda:0"])


@pytest.mark.parametrize("device", BAD_DEVICES)
def test_check_device(device):
    with pytest.raises(InputError) as info:
        check_device(device)
    if device.startswith("cuda") and device != "cuda:x":
        assert "cuda is not available" in str(info.value).lower()


def test_check_device_accepts():
    assert check_device("cpu") == torch.device("cpu")
    assert check_device(" CPU ") == torch.device("cpu")
    assert check_device("auto").type == ("cuda" if HAS_CUDA else "cpu")
    assert check_device(None).type == ("cuda" if HAS_CUDA else "cpu")


@pytest.mark.parametrize("device", ["tpu9", "meta"] + ([] if HAS_CUDA else ["cuda"]))
@pytest.mark.parametrize("command", ["reconstruct", "sample", "evaluate-prior", "train-prior"])
def test_device_checked_first_on_every_command(tmp_path, device, command):
    missing = tmp_path / "missing.safetensors"  # the device must be refused before this is looked at
    args = {
        "reconstruct": (
            "reconstruct",
            tmp_path / "a.png",
            tmp_path / "b.png",
            "-o",
            tmp_path / "o",
            "--prior",
            missing,
        ),
        "sample": ("sample", missing, "-o", tmp_path / "o"),
        "evaluate-prior": ("evaluate-prior", missing, "--data", tmp_path),
        "train-prior": ("train-prior", tmp_path / "nope", "-o", tmp_path / "o"),
    }[command]
    res = run(*args, "--device", device)
    assert_user_error(res, device.split(":")[0])
    assert not (tmp_path / "o").exists()


@pytest.fixture()
def hostile_paths(tmp_path):
    (tmp_path / "afile").write_text("x")
    os.symlink(tmp_path / "loop_b", tmp_path / "loop_a")
    os.symlink(tmp_path / "loop_a", tmp_path / "loop_b")
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    return {
        "parent_is_file": (tmp_path / "afile" / "out", "afile"),
        "is_file": (tmp_path / "afile", "file"),
        "loop": (tmp_path / "loop_a", "symlink loop"),
        "loop_parent": (tmp_path / "loop_a" / "out", "symlink loop"),
        "dangling": (tmp_path / "dangling", "dangling"),
        "dangling_parent": (tmp_path / "dangling" / "out", "dangling"),
    }


@pytest.mark.parametrize("case", ["parent_is_file", "is_file", "loop", "loop_parent", "dangling", "dangling_parent"])
def test_bad_output_paths_are_one_line(ct, prior_path, hostile_paths, case):
    out, word = hostile_paths[case]
    with pytest.raises((OutputError, OutputExistsError), match=word):
        check_output_folder(out)
    assert_user_error(run("simulate", ct, "-o", out, "--detector", 8), word)
    assert_user_error(run("sample", prior_path, "-n", 1, "-o", out), word)
    assert_user_error(run("phantoms", out, "-n", 1, "--size", 8), word)
    assert_user_error(run("evaluate-prior", prior_path, "--data", ct.parent, "-o", out), word.split()[0])


def test_read_only_or_full_file_system(ct, tmp_path, monkeypatch):
    real_mkdir = os.mkdir

    def ro_mkdir(path, *a, **k):
        if ".xfit-probe-" in str(path):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_mkdir(path, *a, **k)

    monkeypatch.setattr(os, "mkdir", ro_mkdir)
    line = assert_user_error(run("simulate", ct, "-o", tmp_path / "xr", "--detector", 8), "read-only", "xr")
    assert ".xfit-probe" not in line  # names the output, not the probe
    with pytest.raises(OutputError, match="Read-only"):
        check_output_file(tmp_path / "r.json")
    monkeypatch.undo()

    import nibabel

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(nibabel, "save", full)
    res = run("phantoms", tmp_path / "ph", "-n", 1, "--size", 8)
    line = assert_user_error(res, "no space", "ph")
    assert ".tmp-" not in line and not (tmp_path / "ph").exists() and no_temp_left(tmp_path)


def test_permission_error_names_path(ct, tmp_path, monkeypatch):
    import xfit.simulate as sim

    def denied(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "xr" / "views.png"))

    monkeypatch.setattr(sim, "write_views_preview", denied)
    assert_user_error(run("simulate", ct, "-o", tmp_path / "xr", "--detector", 8), "permission denied", "xr")
    assert not (tmp_path / "xr").exists()


@pytest.mark.parametrize(
    "args,words",
    [
        (("--detector", "100000"), ("detector", "8192")),
        (("--detector", "0"), ("detector", "positive")),
        (("--detector", "1e3"), ("detector",)),
        (("--sdd", "nan"), ("--sdd", "finite")),
        (("--sdd", "1e400"), ("--sdd", "finite")),
        (("--sod", "-5"), ("--sod",)),
        (("--pixel-spacing", "inf"), ("--pixel-spacing", "finite")),
        (("--pixel-spacing", "0.5,nan"), ("--pixel-spacing",)),
        (("--dose", "nan"), ("--dose",)),
        (("--dose", "1e300"), ("--dose",)),
        (("--scale", "-1"), ("--scale",)),
        (("--angles", "1e308"), ("angles", "360")),
        (("--angles", "0,inf"), ("angles", "finite")),
        (("--seed", "99999999999999999999"), ("--seed",)),
        (("--center-label", "70000"), ("--center-label",)),
    ],
)
def test_simulate_options_checked_before_any_allocation(ct, tmp_path, monkeypatch, args, words):
    import xfit.simulate as sim

    def no_work(*a, **k):
        raise AssertionError("the CT was read before the options were checked")

    monkeypatch.setattr(sim, "read_nifti", no_work)
    assert_user_error(run("simulate", ct, "-o", tmp_path / "xr", *args), *words)
    assert not (tmp_path / "xr").exists()


@pytest.mark.parametrize(
    "args,words",
    [
        (("--truncation", "1e39"), ("--truncation",)),
        (("--truncation", "inf"), ("--truncation", "finite")),
        (("-n", "10000000"), ("-n",)),
        (("--seed", "-1"), ("--seed",)),
    ],
)
def test_sample_options(prior_path, tmp_path, args, words):
    assert_user_error(run("sample", prior_path, "-o", tmp_path / "s", *args), *words)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    "args,words",
    [
        (("--spacing", "nan"), ("--spacing",)),
        (("--spacing", "0.01"), ("--spacing",)),
        (("--fov", "inf"), ("--fov",)),
        (("--fov", "9000", "--spacing", "1"), ("--fov", "1024")),
        (("--size", "100000"), ("--size",)),
    ],
)
def test_phantoms_options(tmp_path, args, words):
    assert_user_error(run("phantoms", tmp_path / "ph", "-n", 1, *args), *words)
    assert not (tmp_path / "ph").exists()


@pytest.mark.parametrize(
    "exc,words",
    [
        (MemoryError(), ("out of memory",)),
        (
            RuntimeError(
                "[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: "
                "you tried to allocate 120000000000 bytes"
            ),
            ("out of memory",),
        ),
        (OverflowError("cannot convert float infinity to integer"), ("too large",)),
        (OSError(errno.ELOOP, "Too many levels of symbolic links", "/x/y"), ("/x/y", "symbolic links")),
    ],
)
def test_allocation_overflow_and_os_errors_are_one_line(ct, tmp_path, monkeypatch, exc, words):
    import xfit.simulate as sim

    def fail(*a, **k):
        raise exc

    monkeypatch.setattr(sim, "simulate_views", fail)
    assert_user_error(run("simulate", ct, "-o", tmp_path / "xr", "--detector", 8), *words)
    assert not (tmp_path / "xr").exists()


def test_bug_keeps_its_traceback(ct, tmp_path, monkeypatch):
    import xfit.simulate as sim

    def bug(*a, **k):
        raise RuntimeError("index out of bounds in xfit")

    monkeypatch.setattr(sim, "simulate_views", bug)
    res = run("simulate", ct, "-o", tmp_path / "xr", "--detector", 8)
    assert res.exit_code == 1 and isinstance(res.exception, RuntimeError)  # a bug is not a user error


def test_warnings_are_one_line_each(ct, tmp_path, monkeypatch):
    import xfit.simulate as sim

    real = sim.simulate_views

    def noisy(*a, **k):
        warnings.warn("first line\nsecond line", UserWarning)
        warnings.warn("another warning", RuntimeWarning)
        return real(*a, **k)

    monkeypatch.setattr(sim, "simulate_views", noisy)
    res = run("simulate", ct, "-o", tmp_path / "xr", "--detector", 8)
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.stderr.splitlines() if "warning" in ln]
    assert lines == ["xfit: warning: first line second line", "xfit: warning: another warning"]


# ============================================================================ 4. checks before work


def test_output_checked_before_reading_ct(ct, tmp_path, monkeypatch):
    import xfit.simulate as sim

    out = tmp_path / "xr"
    out.mkdir()
    (out / "keep.txt").write_text("x")

    def no_work(*a, **k):
        raise AssertionError("work started before the output folder was checked")

    monkeypatch.setattr(sim, "read_nifti", no_work)
    assert_user_error(run("simulate", ct, "-o", out), "exists", "--force")
    assert_user_error(run("simulate", ct, "-o", ct.parent, "--force"), "holds the input")
    assert (out / "keep.txt").exists() and ct.exists()


def test_output_refuses_cwd_and_home(tmp_path, monkeypatch):
    (tmp_path / "f.txt").write_text("x")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OutputError, match="current folder"):
        check_output_folder(".", force=True)
    with pytest.raises(OutputError, match="current folder"):
        check_output_folder(tmp_path.parent, force=True)


def test_sample_checks_output_before_loading_prior(tmp_path, prior_path, monkeypatch):
    import xfit.prior.checkpoint as C

    def no_load(*a, **k):
        raise AssertionError("prior loaded before the output was checked")

    monkeypatch.setattr(C, "load_prior", no_load)
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "x").write_text("x")
    assert_user_error(run("sample", prior_path, "-o", tmp_path / "s"), "exists")
    (tmp_path / "afile").write_text("x")
    assert_user_error(run("sample", prior_path, "-o", tmp_path / "afile" / "s"), "afile")


def test_evaluate_prior_checks_output_before_work(tmp_path, prior_path, ct, monkeypatch):
    import xfit.prior.evaluate as E

    def no_work(*a, **k):
        raise AssertionError("work started before the output was checked")

    monkeypatch.setattr(E, "as_prior", no_work)
    (tmp_path / "r.json").write_text("{}")
    assert_user_error(run("evaluate-prior", prior_path, "--data", ct.parent, "-o", tmp_path / "r.json"), "exists")
    assert_user_error(run("evaluate-prior", prior_path, "--data", tmp_path / "nodata"), "not found")


def test_yaml_reader_edge_cases(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("")
    assert read_yaml_mapping(path) == {}
    path.write_text("- a\n- b\n")
    with pytest.raises(InputError, match="mapping"):
        read_yaml_mapping(path)
    path.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(InputError, match="UTF-8"):
        read_yaml_mapping(path)
    path.write_text("a: [1\n")
    with pytest.raises(InputError, match="invalid YAML"):
        read_yaml_mapping(path)
    path.write_text("!!python/object:os.system {}\n")
    with pytest.raises(InputError):
        read_yaml_mapping(path)  # never constructs Python objects


def test_parse_yaml_reads_one_value_by_the_config_files_rules():
    """``parse_yaml`` (``bench/reconstruct.py --set KEY=YAML``): ``off`` stays a string, as in a
    config file, where PyYAML's default loader reads ``false``."""
    assert parse_yaml("off") == "off" and parse_yaml("true") is True and parse_yaml("1e-3") == 1e-3
    assert parse_yaml("[1, 2]") == [1, 2]
    with pytest.raises(InputError, match="twice"):
        parse_yaml("{a: 1, a: 2}")


def test_validate_sidecar_round_trip():
    view = View(angle_deg=30.0, shape=(8, 8), offset_px=(1.0, -2.0))
    data = view.to_sidecar(line_integral_scale=10.0)
    assert validate_sidecar(data) == {**data, "pixel_spacing_mm": [1.0, 1.0], "offset_px": [1.0, -2.0]}
    assert View.from_sidecar(data, (8, 8)) == view.with_(isocenter_mm=(0.0, 0.0, 0.0))


# ============================================================================ beyond the list


def test_sigterm_cleans_up_like_ctrl_c(ct, tmp_path, monkeypatch):
    import signal

    import xfit.simulate as sim

    real = sim.write_views_preview

    def killed(*a, **k):
        os.kill(os.getpid(), signal.SIGTERM)  # e.g. a batch system's time limit, mid-write
        return real(*a, **k)

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(sim, "write_views_preview", killed)
    res = run("simulate", ct, "-o", tmp_path / "xr", "--detector", 8)
    assert res.exit_code == 130 and "interrupted" in res.stderr
    assert not (tmp_path / "xr").exists() and no_temp_left(tmp_path)
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is restored


def test_sidecar_with_bom_and_sidecar_that_is_not_a_file(xray_pair):
    side = xray_pair / "ap.json"
    side.write_bytes(b"\xef\xbb\xbf" + side.read_bytes())  # saved by a Windows editor
    assert read_xray(xray_pair / "ap.png").view.angle_deg == 0.0
    side.unlink()
    os.symlink(xray_pair / "missing.json", side)  # dangling: not silently ignored
    with pytest.raises(InputError, match="not a readable file"):
        read_xray(xray_pair / "ap.png", angle_deg=0.0)
    side.unlink()
    side.mkdir()
    with pytest.raises(InputError, match="not a readable file"):
        read_xray(xray_pair / "ap.png", angle_deg=0.0)
