"""xfit: reconstruct a 3D CT volume from two X-rays by fitting a 3D StyleGAN2 anatomical prior."""

__version__ = "0.1.0"

from .errors import CheckpointError, GeometryError, InputError, OutputExistsError, XfitError  # noqa: E402
from .geometry import View, make_rays  # noqa: E402
from .projector import backproject, project  # noqa: E402
from .reconstruct import reconstruct  # noqa: E402

__all__ = [
    "__version__",
    "View",
    "make_rays",
    "project",
    "backproject",
    "reconstruct",
    "XfitError",
    "InputError",
    "GeometryError",
    "CheckpointError",
    "OutputExistsError",
]
