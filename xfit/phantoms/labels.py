"""Label maps of a phantom: vertebrae by level (VerSe numbering) and tissue classes.

* ``caseNNNN_seg.nii.gz``: every vertebra carries its VerSe label (:mod:`xfit.levels`: T1..T12 =
  8..19, L1..L5 = 20..24, the sacrum 26), 0 elsewhere.
* ``caseNNNN_tissue.nii.gz``: the tissue class of each voxel, :data:`TISSUE` (also written into
  each case's JSON).

This module only names the classes; the cases are written by :mod:`xfit.phantoms.writing`.
"""

from __future__ import annotations

#: Tissue class values of the tissue maps.
TISSUE: dict[str, int] = {
    "air": 0,  # outside the body
    "skin": 1,
    "fat": 2,
    "muscle": 3,
    "lung": 4,
    "gas": 5,  # bowel and oesophageal gas
    "blood": 6,  # aorta, vena cava, heart
    "liver": 7,
    "spleen": 8,
    "kidney": 9,
    "viscera": 10,  # bowel wall and contents, other organs
    "disc": 11,
    "csf": 12,
    "cord": 13,
    "vertebra": 14,
    "rib": 15,
    "metal": 16,
}
TISSUE_NAMES: dict[int, str] = {v: k for k, v in TISSUE.items()}
