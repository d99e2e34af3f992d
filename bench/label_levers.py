"""Where the fit's vertebra label could come from, scored on the same fits (issue 26's Dice gap).

The X-rays constrain the HU; the prior's label channel follows the HU only loosely
(``bench/label_coupling.py``). This runs the default fit once per phantom (the HU is the same for
every variant below) and scores the vertebra Dice of each candidate label against the truth:

- ``prior``: the prior's label channel, ``label_prob > 0.5`` (``blend_labels: false``; the
  default before 2026-12-07);
- ``network``: the start network's own mask (its segmentation of its own volume);
- ``mix(prior, network)``: both probabilities averaged at ``blend_start``'s weight (``blend_labels``);
  ``mix@W(prior, network)`` at the network's weight ``W`` instead (``--label-weights``);
- ``seg(fit)``: the start network's segmentation head (X-CTRSNet's MulSISNet, trained on
  reconstructed and true CTs alike) applied to the fit's returned volume;
- ``mix(prior, seg(fit))``; ``mix3``: the mean of prior, network and seg(fit);
- ``seg(truth)``: that head on the true CT, the segmenter's own ceiling (an oracle, not a method);
- with ``--extra-networks A,B``: ``ensK`` (the mean of the start network's and the first K of
  these networks' label probabilities, each from the same X-rays) and ``mix(prior, ensK)`` (that
  mean in place of the start network's in ``blend_labels``' mix);

each thresholded at 0.5, or at each of ``--thresholds`` (``>T``), and also after
:func:`~xfit.baselines.common.centred_component` (``+cc``). Development phantoms (seeds 100 and
up), never the held-out ones; 2 threads, one process::

    python bench/label_levers.py --first-seed 100 --phantoms 10 [--style-strength 1] [--whole-body 320]
        [--thresholds 0.4,0.5,0.6] [--label-weights 0.25,0.75] [--extra-networks xctrsnet,xctrsnet@jitter]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics

import numpy as np
import torch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--first-seed", type=int, default=100)
    p.add_argument("--phantoms", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--style-strength", type=float, default=None)
    p.add_argument("--whole-body", type=float, default=None, metavar="FOV_MM")
    p.add_argument("--fit-config", default=None, help="fit config YAML (default: the shipped one)")
    p.add_argument("--thresholds", default="0.5", help="comma-separated probability thresholds")
    p.add_argument("--label-weights", default="", help="comma-separated network weights of extra mixes")
    p.add_argument("--extra-networks", default="", help="comma-separated shipped networks for the ensemble")
    a = p.parse_args(argv)
    extra = [x for x in a.extra_networks.split(",") if x]
    torch.set_num_threads(a.threads)
    thresholds = [float(t) for t in a.thresholds.split(",")]
    label_weights = [float(t) for t in a.label_weights.split(",") if t]

    def key(label: str, t: float, cc: bool) -> str:
        return label + ("" if len(thresholds) == 1 else f" >{t:g}") + (" +cc" if cc else "")

    from xfit.baselines.common import centred_component
    from xfit.baselines.infer import load_baseline, predict
    from xfit.fitting import fit, load_fit_config
    from xfit.fitting.config import network_parts
    from xfit.fitting.hybrid import network_checkpoint, start_network
    from xfit.fitting.optimize import _blend_labels
    from xfit.metrics import dice
    from xfit.prior.checkpoint import load_prior
    from xfit.reconstruct import DEFAULT_PRIOR
    from xfit.studies.evaluate import default_views, make_case, observe
    from xfit.units import hu_to_unit

    prior = load_prior(DEFAULT_PRIOR)
    # the prior's labels alone in the fit's result; the mixes below are made from them (the HU
    # do not depend on blend_labels)
    cfg = dataclasses.replace(load_fit_config(a.fit_config), blend_labels=False)
    views = default_views((0.0, 90.0), 128, 1.0)
    scores: dict[str, list[float]] = {}
    for seed in range(a.first_seed, a.first_seed + a.phantoms):
        case = make_case(seed, prior, views, a.whole_body)
        obs = observe(case, views, style_strength=a.style_strength)
        res = fit(prior, obs.images, obs.views, cfg, seed=0, centre_mm=(0.0, 0.0, 0.0), progress=False)
        name = start_network(cfg, a.whole_body is not None, views=obs.views)
        base, path = network_checkpoint(network_parts(name)[0])  # a pair's mask is its first network's
        _, net_mask, _, notes = predict(base, path, obs.images, obs.views, label_prob=True)
        net_prob = notes["label_prob"]
        ens_probs = [net_prob]
        for other in extra:
            ob, op = network_checkpoint(other)
            ens_probs.append(predict(ob, op, obs.images, obs.views, label_prob=True)[3]["label_prob"])
        # prefixes: the start network with the first k extra networks, k = 1 .. len(extra)
        ens = {k: np.mean(ens_probs[: k + 1], axis=0) for k in range(1, len(ens_probs))}
        seg = load_baseline(base, path).model.mulsis

        def segment(hu: np.ndarray) -> np.ndarray:
            unit = hu_to_unit(torch.from_numpy(np.asarray(hu, np.float32)), tuple(prior.hu_window))
            with torch.no_grad():
                return torch.sigmoid(seg(unit[None, None]).float())[0, 0].numpy()

        w = cfg.blend_start
        fit_seg = segment(res.hu)
        probs = {
            "prior": res.label_prob,
            "network": net_mask.astype(np.float32),
            "mix(prior, network)": _blend_labels(res.label_prob, w, net_prob),
            "seg(fit)": fit_seg,
            **{f"mix@{x:g}(prior, network)": _blend_labels(res.label_prob, x, net_prob) for x in label_weights},
            "mix(prior, seg(fit))": _blend_labels(res.label_prob, w, fit_seg),
            "mix3": (res.label_prob + net_prob + fit_seg) / 3.0,
            **{f"ens{k}": e for k, e in ens.items()},
            **{f"mix(prior, ens{k})": _blend_labels(res.label_prob, w, e) for k, e in ens.items()},
            "seg(truth)": segment(case.hu),
        }
        line = []
        for k, prob in probs.items():
            for t in thresholds:
                for cc in (False, True):
                    mask = prob > t
                    if cc:
                        mask = centred_component(mask) > 0
                    scores.setdefault(key(k, t, cc), []).append(dice(mask, case.vertebra))
            line.append(f"{k} {scores[key(k, thresholds[0], False)][-1]:.3f}")
        print(f"phantom{seed:04d}: " + ", ".join(line), flush=True)
    ref = scores[key("prior", 0.5 if 0.5 in thresholds else thresholds[0], False)]
    print(f"\nvertebra Dice, {a.phantoms} development phantoms from seed {a.first_seed} (start network {name}):")
    print(f"{'label':36s} {'mean':>6s} {'vs prior':>9s} {'better':>7s}")
    for k, v in scores.items():
        d = [x - y for x, y in zip(v, ref)]
        better = sum(x > 1e-9 for x in d)
        print(f"{k:36s} {statistics.mean(v):6.3f} {statistics.mean(d):+9.3f} {better:4d}/{len(d)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
