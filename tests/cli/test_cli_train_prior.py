"""`xfit train-prior` options from the command line: --dry-run, --levels, bad input."""

import subprocess
import sys

from xfit.phantoms import write_phantoms


def _run(*args):
    return subprocess.run([sys.executable, "-m", "xfit.cli", *args], capture_output=True, text=True)


def test_dry_run_explains_the_data(tmp_path):
    ct = tmp_path / "ct"
    write_phantoms(ct, 2, size=32, spacing_mm=2.5, seed=3, progress=False)
    r = _run("train-prior", str(ct), "-o", str(tmp_path / "run"), "--config", "tiny", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "layout xfit" in r.stdout and "crops per level" in r.stdout and "skip" in r.stdout
    assert (tmp_path / "run" / "dry_run.png").exists()
    assert not (tmp_path / "run" / "state.safetensors").exists()


def test_bad_levels_and_level_one_line(tmp_path):
    ct = tmp_path / "ct"
    ct.mkdir()
    r = _run("train-prior", str(ct), "-o", str(tmp_path / "run"), "--levels", "L5-L1")
    assert r.returncode == 2 and r.stderr.startswith("xfit: error:") and len(r.stderr.splitlines()) == 1
    r = _run("reconstruct", "examples/ap.png", "examples/lat.png", "-o", str(tmp_path / "rec"), "--level", "Q7")
    assert r.returncode == 2 and "unknown vertebral level" in r.stderr and not (tmp_path / "rec").exists()
