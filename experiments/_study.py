"""What the experiments' scripts share: the options of a phantom study."""

from __future__ import annotations

import argparse
from pathlib import Path


def study_parser(doc: str) -> argparse.ArgumentParser:
    """The options every phantom study takes: ``-o``, ``--prior``, ``--fit-config``, ``--cases``,
    ``--steps`` (add the study's own to the result)."""
    from xfit.reconstruct import DEFAULT_PRIOR

    ap = argparse.ArgumentParser(description=doc.split("\n", maxsplit=1)[0])
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--prior", type=Path, default=DEFAULT_PRIOR)
    ap.add_argument("--fit-config", default=None)
    ap.add_argument("--cases", type=int, default=6)
    ap.add_argument("--steps", type=int, default=None)
    return ap
