"""Procedural spine CT phantoms in HU, with every vertebra labelled by its level.

The package's modules follow the model:

| module | what it holds |
|---|---|
| :mod:`.morphometry` | published per-level vertebra dimensions, posture ranges, tissue HU (with sources) |
| :mod:`.vertebra` | per-level vertebra shape: correlated draws and the signed distance |
| :mod:`.posture` | lordosis, kyphosis, scoliosis and the pose of every vertebra |
| :mod:`.materials` | bone density across ages, cortical shell, trabecular texture |
| :mod:`.anatomy` | discs, canal and cord, ribs, and the surroundings by level |
| :mod:`.composition` | optional: sex, BMI, per-level muscle / fat areas from published CT data; the torso fitted |
| :mod:`.scanner` | slice thickness, in-plane blur, correlated noise, metal |
| :mod:`.labels` | the tissue classes of the tissue maps |
| :mod:`.model` | draw all parameters from the seed, sample them on a grid |
| :mod:`.writing` | writing a folder of cases and the montage |
| :mod:`.report` | the realism report (measured against the published tables) |

Drawn parameters are typed dataclasses (:mod:`.params`); random fields and noise are functions of
world positions (:mod:`.fields`), so a crop of a large phantom equals the small phantom.
"""

from .labels import TISSUE, TISSUE_NAMES
from .model import CENTRES, LEVELS, REGIONS, Phantom, draw_params, make_phantom
from .writing import case_names, montage, write_phantoms

__all__ = [
    "CENTRES",
    "LEVELS",
    "REGIONS",
    "TISSUE",
    "TISSUE_NAMES",
    "Phantom",
    "case_names",
    "draw_params",
    "make_phantom",
    "montage",
    "write_phantoms",
]
