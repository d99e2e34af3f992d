"""The baseline methods by CLI name and where their shipped checkpoints live.

Torch-free, so that the command line can list the methods (``--methods`` defaults, ``--help``)
without importing the networks.
"""

from __future__ import annotations

from pathlib import Path

#: Part 1 (issue 13): the dense-CT methods X2CT-CNN, X2CT-GAN and EAR.
PART1_METHODS = ("x2ct-cnn", "x2ct-gan", "ear")
#: Part 2 (issue 14): the shape-first methods TransVert, X-CTRSNet and IGCN.
PART2_METHODS = ("transvert", "xctrsnet", "igcn")
#: Every baseline by CLI name.
METHODS = PART1_METHODS + PART2_METHODS
#: Shipped checkpoints: ``xfit/data/baseline-<method>[-<tag>].safetensors``.
DATA_DIR = Path(__file__).resolve().parents[1] / "data"
