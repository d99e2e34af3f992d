"""Retrain the shipped baseline checkpoints in one command.

``python -m xfit.baselines.ship CT_DIR -o RUNS [--methods x2ct-cnn,x2ct-gan,ear] [--data-dir DIR]``

trains (or resumes, bit for bit) each method with its default config in ``RUNS/<method>/`` and
writes a float16 copy of each finished network to ``DIR/baseline-<method>.safetensors`` (default:
``xfit/data/``, where ``xfit reconstruct --method`` and ``xfit evaluate`` find it). The copy's
metadata keeps the training summary plus the run's wall time from its log. The shipped
checkpoints were made with ``CT_DIR`` = the prior's training collection (README, "A prior on the
new phantoms"): ``xfit phantoms train72 -n 800 --size 72 --seed 1000``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

from .common import PART1_METHODS, check_method, load_model, save_model
from .infer import DATA_DIR
from .train import MODEL_FILE, STATE_FILE, resolve_config, train


def run_wall_seconds(run_dir: Path) -> float | None:
    """Seconds between the first and the last line of ``run_dir/log.jsonl`` (None without one)."""
    log = run_dir / "log.jsonl"
    if not log.is_file():
        return None
    times = [json.loads(line).get("time") for line in log.read_text().splitlines() if line.strip()]
    times = [t for t in times if isinstance(t, (int, float))]
    return float(times[-1] - times[0]) if len(times) > 1 else None


def export_half(run_dir: Path, method: str, out: Path) -> Path:
    """``run_dir/baseline.safetensors`` as a float16 copy at ``out`` (replaced), wall time added."""
    b = load_model(run_dir / MODEL_FILE, method)
    summary = {**b.meta.get("training", {}), "wall_seconds": run_wall_seconds(run_dir)}
    return save_model(out, b.model, b.config, summary, half=True, force=True)


def ship(ct_dir: str | Path, runs: str | Path, methods: Sequence[str] = PART1_METHODS,
         data_dir: str | Path = DATA_DIR, workers: int | None = None, progress: bool = True) -> list[Path]:
    """Train every method to its config's steps (resuming a started run) and export it."""
    runs, data_dir = Path(runs), Path(data_dir)
    out = []
    for m in methods:
        check_method(m)
        run = runs / m
        resume = (run / STATE_FILE).is_file()
        cfg = resolve_config(m, None, run, resume)
        train(cfg, ct_dir, run, resume=resume, workers=workers, progress=progress)
        out.append(export_half(run, m, data_dir / f"baseline-{m}.safetensors"))
        print(f"{m}: {out[-1]}", flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m xfit.baselines.ship", description=__doc__.splitlines()[0])
    p.add_argument("ct_dir")
    p.add_argument("-o", "--out", required=True, help="folder of the run folders")
    p.add_argument("--methods", default=",".join(PART1_METHODS))
    p.add_argument("--data-dir", default=str(DATA_DIR), help="where the float16 copies go")
    p.add_argument("--workers", type=int, default=None)
    a = p.parse_args(argv)
    ship(a.ct_dir, a.out, [m.strip() for m in a.methods.split(",")], a.data_dir, a.workers)


if __name__ == "__main__":
    main()
