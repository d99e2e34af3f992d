"""xfit: reconstruct a 3D CT volume from two X-rays by fitting a 3D StyleGAN2 anatomical prior.

The public names below load on first use (PEP 562), so that ``import xfit`` and ``xfit --help``
do not import torch.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from .errors import CheckpointError, GeometryError, InputError, OutputExistsError, XfitError

#: Lazily loaded public name -> the module that defines it.
_LAZY = {
    "View": ".geometry",
    "make_rays": ".geometry",
    "project": ".projector",
    "backproject": ".projector",
}

if TYPE_CHECKING:
    from .geometry import View, make_rays
    from .projector import backproject, project
    from .reconstruct import reconstruct


class _Package(types.ModuleType):
    """``xfit.reconstruct`` names both a submodule and the public function; the function wins, as
    when it was imported eagerly (importing the submodule binds the module here, and is ignored)."""

    @property
    def reconstruct(self):
        return importlib.import_module(".reconstruct", __name__).reconstruct

    @reconstruct.setter
    def reconstruct(self, value) -> None:
        pass


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'xfit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | {"reconstruct"})


__all__ = [
    "CheckpointError",
    "GeometryError",
    "InputError",
    "OutputExistsError",
    "View",
    "XfitError",
    "__version__",
    "backproject",
    "make_rays",
    "project",
    "reconstruct",
]
