"""File input and output, one module per job:

* :mod:`xfit.io.files`: atomic writes (temporary name, then rename), whole output folders, the
  pre-flight checks of output paths (existence, ``--force``) and folder locks;
* :mod:`xfit.io.volumes`: NIfTI volumes (:class:`Volume`), resampling and centred crops;
* :mod:`xfit.io.images`: 8/16-bit grayscale PNG/JPEG/TIFF reading and PNG writing;
* :mod:`xfit.io.text`: strict JSON/YAML reading (sidecars, configs) and JSON writing;
* :mod:`xfit.io.xray`: X-rays (an image with its view geometry: JSON sidecar or DICOM tags);
* :mod:`xfit.io.dicom`: the one mapping from DICOM tags to xfit's view geometry.

HU <-> mu conversions live in :mod:`xfit.units` (re-exported here for existing callers).

Conventions (see ``docs/architecture.md``):

* Volumes are reoriented to the closest canonical RAS+ orientation on load and carried with
  their 4x4 affine (voxel index -> world mm), data ``[I, J, K]``.
* CT intensities are HU; ``mu = MU_WATER * max(0, 1 + HU / 1000)`` per mm.
* A simulated X-ray is a 16-bit PNG holding ``round(65535 * p / line_integral_scale)`` of the
  line integral ``p`` (bright = attenuating) with a JSON sidecar (``ap.png`` -> ``ap.json``).
* Every file is written atomically (temporary name in the same folder, then ``os.replace``) and
  an existing output is never overwritten unless ``force=True``.

The names below are re-exported so ``from xfit.io import read_xray`` keeps working; new code
may import from the submodule.
"""

from __future__ import annotations

from ..devices import check_device
from ..units import MU_WATER, hu_to_mu, mu_to_hu
from .files import (
    LOCK_NAME,
    PathLike,
    atomic_folder,
    atomic_write,
    check_output_file,
    check_output_folder,
    check_output_path,
    folder_lock,
    held_lock,
    holder_text,
    portable_path,
    prepare_output_dir,
)
from .images import read_image, read_image_raw, write_png8, write_png16
from .text import (
    MAX_SMALL_FILE_BYTES,
    finite_json,
    parse_json_strict,
    parse_yaml,
    read_sidecar,
    read_yaml_mapping,
    write_sidecar,
)
from .volumes import Volume, crop_centred, crop_start, read_nifti, resample, resample_onto, write_nifti
from .xray import (
    DEFAULT_SDD_MM,
    DEFAULT_SOD_MM,
    XRay,
    read_dicom,
    read_pixels,
    read_xray,
    sidecar_path,
    stored_to_image,
    write_radiograph,
    write_xray,
)

__all__ = [
    "DEFAULT_SDD_MM",
    "DEFAULT_SOD_MM",
    "LOCK_NAME",
    "MAX_SMALL_FILE_BYTES",
    "MU_WATER",
    "PathLike",
    "Volume",
    "XRay",
    "atomic_folder",
    "atomic_write",
    "check_device",
    "check_output_file",
    "check_output_folder",
    "check_output_path",
    "crop_centred",
    "crop_start",
    "finite_json",
    "folder_lock",
    "held_lock",
    "holder_text",
    "hu_to_mu",
    "mu_to_hu",
    "parse_json_strict",
    "parse_yaml",
    "portable_path",
    "prepare_output_dir",
    "read_dicom",
    "read_image",
    "read_image_raw",
    "read_nifti",
    "read_pixels",
    "read_sidecar",
    "read_xray",
    "read_yaml_mapping",
    "resample",
    "resample_onto",
    "sidecar_path",
    "stored_to_image",
    "write_nifti",
    "write_png8",
    "write_png16",
    "write_radiograph",
    "write_sidecar",
    "write_xray",
]
