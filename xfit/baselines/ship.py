"""Retrain the shipped baseline checkpoints in one command.

``python -m xfit.baselines.ship CT_DIR -o RUNS [--methods x2ct-cnn,...] [--jitter 0,50] [--data-dir DIR]``

trains (or resumes, bit for bit) each method with its default config in ``RUNS/<method>/`` and
writes a float16 copy of each finished network to ``DIR/baseline-<method>.safetensors`` (default:
``xfit/data/``, where ``xfit reconstruct --method`` and ``xfit evaluate`` find it). The copy's
metadata keeps the training summary plus the run's wall time from its log. ``--jitter J`` (one
number, or one per view) trains the same configs with ``views.angle_jitter_deg = J`` into
``RUNS/<method>-jitter/`` and ships ``baseline-<method>-jitter.safetensors``, which ``xfit
evaluate`` runs as ``<method>@jitter``. The shipped checkpoints were made with ``CT_DIR`` = the
prior's training collection (README, "A prior on the new phantoms"):
``xfit phantoms train72 -n 800 --size 72 --seed 1000``; the jittered ones with ``--jitter 0,50``
(the AP at 0 degrees, the second view anywhere in 40..140).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

from .common import METHODS, check_method, load_model, save_model
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


def ship(ct_dir: str | Path, runs: str | Path, methods: Sequence[str] = METHODS,
         data_dir: str | Path = DATA_DIR, workers: int | None = None, progress: bool = True,
         jitter: float | list[float] | None = None) -> list[Path]:
    """Train every method to its config's steps (resuming a started run) and export it;
    with ``jitter``, the angle-jittered variants (``<method>-jitter``)."""
    runs, data_dir = Path(runs), Path(data_dir)
    suffix = "" if jitter is None else "-jitter"
    out = []
    for m in methods:
        check_method(m)
        run = runs / f"{m}{suffix}"
        resume = (run / STATE_FILE).is_file()
        cfg = resolve_config(m, None, run, resume)
        if jitter is not None and not resume:
            cfg.views.angle_jitter_deg = jitter
            cfg.name = f"{cfg.name}-jitter"
            cfg.views.jitters()  # InputError on a malformed jitter
        train(cfg, ct_dir, run, resume=resume, workers=workers, progress=progress)
        out.append(export_half(run, m, data_dir / f"baseline-{m}{suffix}.safetensors"))
        print(f"{m}{suffix}: {out[-1]}", flush=True)
    return out


def parse_jitter(text: str | None) -> float | list[float] | None:
    """``"3"`` -> 3.0, ``"0,50"`` -> [0.0, 50.0], None -> None."""
    if text is None:
        return None
    vals = [float(x) for x in text.split(",")]
    return vals[0] if len(vals) == 1 else vals


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m xfit.baselines.ship", description=__doc__.splitlines()[0])
    p.add_argument("ct_dir")
    p.add_argument("-o", "--out", required=True, help="folder of the run folders")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--jitter", default=None, help="angle jitter in degrees: one number, or one per view (0,50)")
    p.add_argument("--data-dir", default=str(DATA_DIR), help="where the float16 copies go")
    p.add_argument("--workers", type=int, default=None)
    a = p.parse_args(argv)
    ship(a.ct_dir, a.out, [m.strip() for m in a.methods.split(",")], a.data_dir, a.workers,
         jitter=parse_jitter(a.jitter))


if __name__ == "__main__":
    main()
