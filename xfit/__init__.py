"""xfit: reconstruct a 3D CT volume from two X-rays by fitting a 3D StyleGAN2 anatomical prior."""

__version__ = "0.1.0"

from .errors import CheckpointError, GeometryError, InputError, OutputExistsError, XfitError
from .geometry import View, make_rays
from .projector import backproject, project
from .reconstruct import reconstruct

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
