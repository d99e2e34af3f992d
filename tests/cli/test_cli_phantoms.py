"""`xfit phantoms` from the command line: options and bad input (one line, exit 2, nothing written)."""

import json
import subprocess
import sys

import pytest


def _run(*args):
    return subprocess.run([sys.executable, "-m", "xfit.cli", *args], capture_output=True, text=True)


@pytest.mark.parametrize(
    "extra",
    [
        ["--level", "X9"],
        ["--level", "L5-L1"],
        ["--level", "C3"],
        ["--level", ""],
        ["--size", "64,64"],
        ["--size", "4"],
        ["--size", "a"],
        ["--noise", "nan"],
        ["--noise", "-3"],
        ["--spacing", "0"],
        ["--fov", "1e9"],
    ],
)
def test_bad_input_one_line(tmp_path, extra):
    out = tmp_path / "ph"
    r = _run("phantoms", str(out), "-n", "1", *extra)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("xfit: error:") and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not out.exists()


def test_level_and_scanner_options(tmp_path):
    out = tmp_path / "ph"
    r = _run(
        "phantoms",
        str(out),
        "-n",
        "2",
        "--size",
        "24,24,32",
        "--spacing",
        "3",
        "--level",
        "T12-L1",
        "--no-blur",
        "--noise",
        "0",
        "--no-metal",
        "--seed",
        "5",
    )
    assert r.returncode == 0, r.stderr
    for i in range(2):
        meta = json.loads((out / f"case000{i}.json").read_text())
        assert meta["centre_level"] in ("T12", "L1") and meta["shape"] == [24, 24, 32]
        assert meta["params"]["scanner"]["metal"] is False
    r = _run("phantoms", str(out), "-n", "1")
    assert r.returncode == 2 and "exists" in r.stderr
