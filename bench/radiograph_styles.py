"""The figure of docs/radiographs.md: ideal DRRs against the clinical style (lumbar AP and lateral
presets of :mod:`xfit.radiograph`) and the clinical style at half strength, of one phantom.

    python bench/radiograph_styles.py -o docs/radiographs.png [--seed 5001]

It runs ``xfit simulate`` (the library call) once per style into a temporary folder and prints
the time of each against the ideal one.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from xfit.io import read_xray, write_nifti
from xfit.phantoms.model import make_phantom
from xfit.radiograph import PRESETS
from xfit.simulate import simulate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--out", type=Path, default=Path("docs/radiographs.png"))
    p.add_argument("--seed", type=int, default=5001)
    a = p.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from xfit.preview import figure_to_png

    ph = make_phantom(a.seed, size=(160, 144, 224), spacing_mm=1.5, level="lumbar")
    half = {k: v.replace(strength=0.5) for k, v in PRESETS.items()}
    rows = {
        "ideal (line integrals)": ("ideal", None),
        "clinical, strength 0.5": ("clinical", half),
        "clinical (the presets)": ("clinical", PRESETS),
    }
    images: dict[str, list[np.ndarray]] = {}
    secs: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        ct = Path(tmp) / "ct.nii.gz"
        write_nifti(ct, ph.hu.astype(np.float32), ph.affine)
        for i, (title, (style, styles)) in enumerate(rows.items()):
            t0 = time.perf_counter()
            sims = simulate(
                ct,
                [0.0, 90.0],
                Path(tmp) / f"s{i}",
                detector_shape=(384, 320),
                pixel_spacing_mm=(0.8, 0.8),
                style=style,
                styles=styles,
                seed=a.seed,
            )
            secs[title] = time.perf_counter() - t0
            images[title] = [read_xray(s.png).image for s in sims]
    fig, axes = plt.subplots(2, len(rows), figsize=(3.0 * len(rows), 7.0))
    for j, (title, (ap, lat)) in enumerate(images.items()):
        for i, (img, name) in enumerate(((ap, "AP"), (lat, "lateral"))):
            axes[i, j].imshow(img, cmap="gray")
            axes[i, j].set_title(f"{name}: {title}", fontsize=8)
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
    fig.tight_layout()
    figure_to_png(fig, a.out)
    base = secs["ideal (line integrals)"]
    for title, s in secs.items():
        print(f"{title:28s} {s:6.2f} s for AP + lateral ({s / base:.1f}x the ideal)")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
