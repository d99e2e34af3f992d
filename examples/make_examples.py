"""Regenerate the shipped example: a phantom never seen in training and its AP/lateral X-rays.

    python examples/make_examples.py [--force]

Writes ``examples/ct.nii.gz``, ``examples/seg.nii.gz`` (ground truth, 64^3 at 1.25 mm, the
grid centred on the centroid of the vertebra, at the world origin = the isocentre; the label map
holds every vertebra by its VerSe level; the centred one is the vertebra at the grid centre) and
``examples/ap.png``, ``examples/lat.png`` with their sidecars (cone beam, sdd 1800 mm, sod 1500 mm,
128 x 128 px of 1.0 mm). The prior shipped with xfit was trained on phantom seeds 1000-1599; the example uses seed 9001.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from xfit.io import write_nifti
from xfit.phantoms import make_phantom
from xfit.simulate import simulate

SEED = 9001
HERE = Path(__file__).resolve().parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--force", action="store_true")
    a = p.parse_args()
    ph = make_phantom(SEED, size=64, spacing_mm=1.25, centre="vertebra")
    write_nifti(HERE / "ct.nii.gz", ph.hu, ph.affine, force=a.force)
    write_nifti(HERE / "seg.nii.gz", ph.seg, ph.affine, force=a.force)
    with tempfile.TemporaryDirectory() as tmp:
        simulate(
            HERE / "ct.nii.gz", [0.0, 90.0], Path(tmp) / "xr", detector_shape=(128, 128), pixel_spacing_mm=(1.0, 1.0)
        )
        for name in ("ap.png", "ap.json", "lat.png", "lat.json", "views.png"):
            dst = HERE / name
            if dst.exists() and not a.force:
                raise SystemExit(f"{dst} exists; use --force")
            shutil.copyfile(Path(tmp) / "xr" / name, dst)
    print(f"wrote the example (phantom seed {SEED}) to {HERE}")


if __name__ == "__main__":
    main()
