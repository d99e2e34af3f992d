"""Cost of the feed-forward baselines at 64^3 on this machine: parameters, training images/s
(fp32 and bfloat16 autocast), inference time and peak memory, per method (part 1: x2ct-cnn,
x2ct-gan, ear; part 2: transvert, xctrsnet, igcn).

Usage::

    python bench/baselines.py [--method ear] [--steps 3] [--threads 2] [--device cpu] [--no-bf16]

Each method runs in its own subprocess (so the peak resident memory, ``ru_maxrss``, is that
method's alone; on CUDA ``max_memory_allocated``). Training: a :class:`xfit.baselines.train
.BaselineTrainer` with the method's shipped config (``xfit/configs/baseline-NAME.yaml``) on synthetic
crops (ellipsoids; the cost does not depend on the content), one warm-up step, then ``--steps``
timed steps; the time of the on-the-fly X-ray simulation (projector + footprints) is reported
apart. Inference: :func:`xfit.baselines.infer.predict` from a checkpoint of the untrained network
(median of 3 after a warm-up). Prints a table, the ratios to X2CT-CNN, and a JSON line. Nothing
here is asserted by the tests.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

METHODS = ("x2ct-cnn", "x2ct-gan", "ear", "transvert", "xctrsnet", "igcn")


def _crops(n: int, res: int) -> torch.Tensor:
    ax = torch.linspace(-1, 1, res)
    x, y, z = torch.meshgrid(ax, ax, ax, indexing="ij")
    out = []
    for i in range(n):
        inside = (x / 0.4) ** 2 + (y / (0.3 + 0.05 * i)) ** 2 + (z / 0.35) ** 2 < 1
        out.append(torch.stack([torch.where(inside, 0.1, -0.3), inside.float() * 2 - 1]))
    return torch.stack(out)


def _one(method: str, steps: int, device: str, bf16: bool) -> dict:
    from xfit.baselines.common import load_config, param_count, save_model
    from xfit.baselines.infer import predict
    from xfit.baselines.train import BaselineTrainer
    from xfit.io import hu_to_mu
    from xfit.prior.config import unit_to_hu
    from xfit.projector import project

    cfg = load_config(method)
    res = {"method": method, "device": device, "threads": torch.get_num_threads()}
    crops = _crops(cfg.training.batch_size, cfg.resolution)
    levels = torch.full((cfg.training.batch_size,), 20.0)  # L1 (TransVert's target; ignored by the others)
    for mode in ["off", "bf16"] if bf16 else ["off"]:
        tr = BaselineTrainer(cfg, device, amp=mode)
        if method == "igcn":  # the template: the mean label of the (synthetic) crops
            from xfit.baselines.igcn import template_from_crops

            tr.G.set_template(*template_from_crops(crops, cfg))
            res["template_vertices"] = int(tr.G.template.shape[0])
        res["params_G"] = param_count(tr.G)
        res["params_D"] = param_count(tr.D) if tr.D is not None else 0
        tr.train_step(crops, levels)  # warm-up
        t0 = time.perf_counter()
        for _ in range(steps):
            tr.train_step(crops, levels)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        dt = (time.perf_counter() - t0) / steps
        res[f"train_img_per_s_{mode}"] = cfg.training.batch_size / dt
        if mode == "off":
            t0 = time.perf_counter()
            for _ in range(steps):
                tr.make_inputs(crops)
            res["simulate_s_per_img"] = (time.perf_counter() - t0) / steps / cfg.training.batch_size
            with tempfile.TemporaryDirectory() as tmp:
                path = save_model(Path(tmp) / "m.safetensors", tr.G, cfg)
                views = cfg.views.views()
                mu = hu_to_mu(unit_to_hu(crops[:1, :1], tuple(cfg.hu_window)))
                with torch.no_grad():
                    imgs = project(mu, tr.affine, views)[0].numpy()
                predict(method, path, list(imgs), views, device=device)
                times = []
                for _ in range(3):
                    t0 = time.perf_counter()
                    predict(method, path, list(imgs), views, device=device)
                    times.append(time.perf_counter() - t0)
                res["inference_s"] = statistics.median(times)
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.startswith("cuda"):
        res["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return res


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", action="append", choices=METHODS, default=None, help="repeatable [default: all six]")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-bf16", action="store_true")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.child:
        print(json.dumps(_one(a.child, a.steps, a.device, not a.no_bf16)))
        return
    rows = []
    for m in a.method or METHODS:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            m,
            "--steps",
            str(a.steps),
            "--threads",
            str(a.threads),
            "--device",
            a.device,
        ] + (["--no-bf16"] if a.no_bf16 else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    head = (
        f"{'method':9} {'params G':>9} {'params D':>9} {'img/s fp32':>10} {'img/s bf16':>10} {'sim s/img':>9} "
        f"{'infer s':>8} {'peak MB':>8}"
    )
    print(head)
    for r in rows:
        print(
            f"{r['method']:9} {r['params_G'] / 1e6:8.2f}M {r['params_D'] / 1e6:8.2f}M "
            f"{r['train_img_per_s_off']:10.3f} {r.get('train_img_per_s_bf16', float('nan')):10.3f} "
            f"{r['simulate_s_per_img']:9.3f} {r['inference_s']:8.3f} {r['peak_rss_mb']:8.0f}"
        )
    ref = rows[0]
    for r in rows[1:]:
        print(
            f"{r['method']} / {ref['method']}: training {r['train_img_per_s_off'] / ref['train_img_per_s_off']:.2f}x "
            f"img/s, inference {r['inference_s'] / ref['inference_s']:.2f}x time"
        )
    for r in rows:
        if "train_img_per_s_bf16" in r:
            print(
                f"{r['method']}: bf16 / fp32 training speed {r['train_img_per_s_bf16'] / r['train_img_per_s_off']:.2f}x"
            )
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
