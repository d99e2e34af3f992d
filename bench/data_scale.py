"""Memory of train-prior against the size of the collection (out-of-core crop cache).

Usage::

    python bench/data_scale.py --crops 1000 --crops 10000 [--workers 2] [--steps 3] [--keep]

For each size it writes a synthetic collection in the xfit layout into a temporary folder (tiny
spines: 32 x 32 x 160 voxels at 2.5 mm holding seven vertebrae each, so seven crops per file for the
``tiny`` config's 32^3 crops), then runs ``python -m xfit.prior.train DIR -o RUN --config tiny
--max-steps S`` in a fresh process and reports its preparation time (from the cache's index
timestamp), total wall time, and the peak resident memory of the training process and of its
preparation workers (``resource.getrusage`` of the children: the largest worker). The data are
deleted afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

RUNNER = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from xfit.prior.data import load_training_set
from xfit.prior.config import load_config
from xfit.prior.train import data_settings, train
ct_dir, run, steps, workers = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
cfg = load_config("tiny")
t1 = time.perf_counter()
data = load_training_set(ct_dir, data_settings(cfg), cache_dir=run + "/cache", progress=False, workers=workers)
prep = time.perf_counter() - t1
rss_prep = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
n = len(data.volumes)
del data
t2 = time.perf_counter()
s = train(cfg, ct_dir, run, max_steps=steps, progress=False, device="cpu", workers=workers)
train_s = time.perf_counter() - t2
print(json.dumps({"crops": n, "prepare_s": prep, "train_s": train_s, "steps": s["steps"],
                  "img_per_s": s["img_per_s"], "rss_after_prepare_mb": rss_prep / 1024,
                  "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "worker_rss_peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def write_collection(folder: Path, n_files: int) -> None:
    sys.path.insert(0, str(HERE.parent / "tests"))
    from spine_synth import write_xfit_case

    levels = ("T10", "T11", "T12", "L1", "L2", "L3", "L4")
    for i in range(n_files):
        write_xfit_case(folder, i, fov=(32, 32, 160), levels=levels, centre_level="L1", seed=i)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--crops", type=int, action="append", default=None)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--keep", action="store_true")
    p.add_argument("--tmp", default=None, help="folder for the temporary data")
    a = p.parse_args(argv)
    results = []
    for crops in a.crops or [1000, 10000]:
        root = Path(tempfile.mkdtemp(prefix=f"xfit-scale-{crops}-", dir=a.tmp))
        try:
            t0 = time.perf_counter()
            write_collection(root / "ct", max(1, -(-crops // 7)))
            write_s = time.perf_counter() - t0
            env = {**os.environ, "OMP_NUM_THREADS": "2"}
            res = subprocess.run(
                [sys.executable, "-c", RUNNER, str(root / "ct"), str(root / "run"), str(a.steps), str(a.workers)],
                check=False,
                capture_output=True,
                text=True,
                env=env,
            )
            if res.returncode != 0:
                raise SystemExit(res.stderr[-3000:])
            rec = json.loads(res.stdout.strip().splitlines()[-1])
            cache = next((root / "run" / "cache").glob("data-*"))
            rec["cache_mb"] = sum(f.stat().st_size for f in cache.iterdir()) / 2**20
            rec["files"] = max(1, -(-crops // 7))
            rec["write_s"] = write_s
            results.append(rec)
            print(
                f"{rec['crops']} crops from {rec['files']} files: prepare {rec['prepare_s']:.0f} s "
                f"({a.workers} workers), {rec['steps']} steps {rec['train_s']:.0f} s; peak RSS "
                f"{rec['rss_peak_mb']:.0f} MB (after preparing {rec['rss_after_prepare_mb']:.0f} MB), "
                f"largest worker {rec['worker_rss_peak_mb']:.0f} MB; cache {rec['cache_mb']:.0f} MB",
                flush=True,
            )
        finally:
            if not a.keep:
                shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
