"""File input and output: NIfTI volumes, 8/16-bit images, DICOM X-rays, sidecars, atomic writes.

Conventions (see ``docs/architecture.md``):

* Volumes are reoriented to the closest canonical RAS+ orientation on load and carried with
  their 4x4 affine (voxel index -> world mm), data ``[I, J, K]``.
* CT intensities are HU; ``mu = MU_WATER * max(0, 1 + HU / 1000)`` per mm.
* A simulated X-ray is a 16-bit PNG holding ``round(65535 * p / line_integral_scale)`` of the
  line integral ``p`` (bright = attenuating) with a JSON sidecar (``ap.png`` -> ``ap.json``).
* Every file is written atomically (temporary name in the same folder, then ``os.replace``) and
  an existing output is never overwritten unless ``force=True``.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import math
import os
import secrets
import socket
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence, TypeVar

import numpy as np
import torch
from torch import Tensor

from .devices import check_device  # noqa: F401 (re-exported: io.check_device)
from .errors import GeometryError, InputError, OutputError, OutputExistsError, XfitError
from .geometry import View

#: Linear attenuation coefficient of water in 1/mm (documented approximation, ~70 keV).
MU_WATER: float = 0.02

#: Defaults used for an X-ray without sidecar or DICOM geometry (once its angle is given).
DEFAULT_SDD_MM = 1800.0
DEFAULT_SOD_MM = 1500.0

_DICOM_SUFFIXES = (".dcm", ".dicom")
_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 luminance weights

ArrayLike = TypeVar("ArrayLike", np.ndarray, Tensor, float)

PathLike = str | os.PathLike


# ----------------------------------------------------------------------------- HU <-> mu


def hu_to_mu(hu: ArrayLike) -> ArrayLike:
    """Hounsfield units to linear attenuation ``mu = MU_WATER * max(0, 1 + HU/1000)`` (1/mm).

    Works on torch tensors (differentiable), numpy arrays and Python numbers; shape is kept.
    """
    if isinstance(hu, Tensor):
        return MU_WATER * torch.clamp(1.0 + hu / 1000.0, min=0.0)
    if isinstance(hu, np.ndarray):
        return MU_WATER * np.maximum(0.0, 1.0 + hu / 1000.0)
    return MU_WATER * max(0.0, 1.0 + float(hu) / 1000.0)


def mu_to_hu(mu: ArrayLike) -> ArrayLike:
    """Inverse of :func:`hu_to_mu` for ``mu > 0``; ``mu <= 0`` maps to -1000 HU (air)."""
    if isinstance(mu, Tensor):
        return 1000.0 * (torch.clamp(mu, min=0.0) / MU_WATER - 1.0)
    if isinstance(mu, np.ndarray):
        return 1000.0 * (np.maximum(mu, 0.0) / MU_WATER - 1.0)
    return 1000.0 * (max(float(mu), 0.0) / MU_WATER - 1.0)


# ----------------------------------------------------------------------------- atomic writes


def _full_suffix(path: Path) -> str:
    """``.nii.gz`` for compressed files, else the last suffix (``.png``), possibly ``""``."""
    suffixes = path.suffixes
    if len(suffixes) >= 2 and suffixes[-1].lower() == ".gz":
        return "".join(suffixes[-2:])
    return path.suffix


def _check_writable(path: Path, force: bool) -> None:
    if path.is_dir():
        raise OutputExistsError(f"{path} is a folder; cannot write a file there")
    if path.exists() and not force:
        raise OutputExistsError(f"{path} exists; use --force to overwrite")


def _os_reason(exc: OSError) -> str:
    """The reason of an OSError in words (``No space left on device``), without the path."""
    return exc.strerror or _one_line(exc) or type(exc).__name__


@contextlib.contextmanager
def atomic_write(path: PathLike, *, force: bool = False) -> Iterator[Path]:
    """Context manager yielding a temporary path next to ``path`` that replaces it on success.

    The temporary name keeps the suffix (``.recon.tmp-1a2b3c4d.nii.gz``) so writers that pick the
    format from the name work. On an exception the temporary file is deleted and ``path`` is left
    untouched. Missing parent folders are created.

    Raises:
        OutputExistsError: ``path`` exists and ``force`` is false, or ``path`` is a folder.
        OutputError: the file system refused (read-only, full, permission); names ``path``.
    """
    path = Path(path)
    _check_writable(path, force)
    suffix = _full_suffix(path)
    base = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    tmp = path.with_name(f".{base}.tmp-{secrets.token_hex(4)}{suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        _check_writable(path, force)  # something may have appeared meanwhile
        _normal_permissions(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError) and not isinstance(exc, XfitError):
            raise OutputError(f"cannot write {path}: {_os_reason(exc)}") from exc
        raise


def _normal_permissions(path: Path) -> None:
    """Give a finished file the permissions a plain ``open`` would (0666 minus the umask); some
    writers (safetensors) create theirs readable by the owner only."""
    mask = os.umask(0)
    os.umask(mask)
    with contextlib.suppress(OSError):
        if path.is_file():
            os.chmod(path, 0o666 & ~mask)


def prepare_output_dir(path: PathLike, *, force: bool = False) -> Path:
    """Create an output folder (with parents) and return it (files are then written one by one;
    prefer :func:`atomic_folder`, which writes the folder as a whole).

    Raises:
        OutputExistsError: ``path`` is a file, or a non-empty folder and ``force`` is false.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputExistsError(f"{path} exists and is a file, not a folder")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise OutputExistsError(f"{path} exists; use --force to overwrite")
    path.mkdir(parents=True, exist_ok=True)
    return path


# ----------------------------------------------------------------------------- whole output folders


def _check_path_components(path: Path) -> Path:
    """Walk ``path`` from the root; fail on a symlink loop, a dangling symlink or a file used as
    a folder. Returns the deepest existing ancestor (or ``path`` itself when it exists)."""
    path = Path(os.path.abspath(path))
    parts = path.parts
    existing = Path(parts[0])
    for i in range(1, len(parts)):
        here = Path(*parts[: i + 1])
        try:
            st = os.lstat(here)
        except FileNotFoundError:
            break
        except OSError as exc:  # ENOTDIR (a file above), ELOOP, EACCES
            raise OutputError(f"cannot use output {path}: {here}: {_os_reason(exc)}") from exc
        if stat.S_ISLNK(st.st_mode):
            try:
                os.stat(here)
            except FileNotFoundError as exc:
                raise OutputError(f"cannot use output {path}: {here} is a dangling symlink "
                                  f"(to {os.readlink(here)})") from exc
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise OutputError(f"cannot use output {path}: {here} is a symlink loop") from exc
                raise OutputError(f"cannot use output {path}: {here}: {_os_reason(exc)}") from exc
        if i < len(parts) - 1 and not here.is_dir():
            raise OutputError(f"cannot use output {path}: {here} is a file, not a folder")
        existing = here
    return existing


def _probe_writable(folder: Path, target: Path) -> None:
    """Create and remove a small folder in ``folder`` (catches read-only, full, permission)."""
    probe = folder / f".xfit-probe-{secrets.token_hex(4)}"
    try:
        probe.mkdir()
    except OSError as exc:
        raise OutputError(f"cannot write output {target}: {folder}: {_os_reason(exc)}") from exc
    with contextlib.suppress(OSError):
        probe.rmdir()


def _is_within(inner: Path, outer: Path) -> bool:
    try:
        inner.relative_to(outer)
        return True
    except ValueError:
        return False


def check_output_folder(path: PathLike, *, force: bool = False, inputs: Sequence[PathLike] = ()) -> Path:
    """Pre-flight check of an output folder, before any work.

    Checks that no path component is a file, a dangling symlink or a symlink loop, that the
    folder is free (missing or empty) unless ``force``, that it can be written (a probe folder is
    created and removed in it or its nearest existing parent) and, with ``force``, that replacing
    it would not delete the ``inputs``, the current folder or the home folder.

    Returns:
        The resolved (absolute, symlink-free) path.
    Raises:
        OutputExistsError: the folder exists, is not empty and ``force`` is false.
        OutputError: any other reason the folder cannot be written (the message names the path).
    """
    path = Path(path)
    if str(path) == "":
        raise OutputError("the output folder name is empty")
    existing = _check_path_components(path)
    resolved = Path(os.path.realpath(path))
    if resolved.exists():
        if not resolved.is_dir():
            raise OutputExistsError(f"output {path} exists and is a file, not a folder")
        try:
            non_empty = any(resolved.iterdir())
        except OSError as exc:
            raise OutputError(f"cannot use output {path}: {_os_reason(exc)}") from exc
        if non_empty and not force:
            raise OutputExistsError(f"output {path} exists; use --force to replace it")
        danger = [Path.cwd().resolve(), Path.home().resolve(), Path(resolved.anchor)]
        if any(_is_within(d, resolved) for d in danger):
            raise OutputError(f"refusing to replace {path}: it holds the current folder or the home folder")
        _probe_writable(resolved.parent, path)  # the new folder is renamed into the parent
    else:
        _probe_writable(Path(os.path.realpath(existing)), path)
    for p in inputs:
        if p is not None and _is_within(Path(os.path.realpath(p)), resolved):
            raise OutputError(f"output folder {path} holds the input {p}; choose another output folder")
    return resolved


def check_output_path(path: PathLike) -> Path:
    """Pre-flight check of an output folder that may exist and be reused (a training run
    folder): no path component is a file, a dangling symlink or a loop, and it can be written.
    Whether it may be reused is the caller's decision. Returns the resolved path.

    Raises:
        OutputError: the message names the path and the reason.
    """
    path = Path(path)
    existing = _check_path_components(path)
    resolved = Path(os.path.realpath(path))
    if resolved.exists() and not resolved.is_dir():
        raise OutputExistsError(f"output {path} exists and is a file, not a folder")
    _probe_writable(resolved if resolved.exists() else Path(os.path.realpath(existing)), path)
    return resolved


def check_output_file(path: PathLike, *, force: bool = False) -> Path:
    """Pre-flight check of one output file (like :func:`check_output_folder`, for a file).

    Raises:
        OutputExistsError: it exists and ``force`` is false. OutputError: it is a folder, or its
        folder cannot be written, or a path component is a file, dangling symlink or loop.
    """
    path = Path(path)
    existing = _check_path_components(path)
    if path.is_dir():
        raise OutputError(f"output {path} is a folder; give a file name")
    if path.exists() and not force:
        raise OutputExistsError(f"{path} exists; use --force to overwrite")
    folder = Path(os.path.realpath(existing if existing != path else path.parent))
    _probe_writable(folder, path)
    return Path(os.path.realpath(path))


@contextlib.contextmanager
def atomic_folder(path: PathLike, *, force: bool = False) -> Iterator[Path]:
    """Write an output folder as a whole.

    Yields a fresh temporary sibling folder (``.out.tmp-1a2b3c4d``); write every output file
    inside it (``force=True`` is fine there: the folder is new). On normal exit it is renamed to
    ``path``; with ``force`` an existing ``path`` is moved aside only once the new folder is
    complete and deleted after the new one is in place, so an existing folder is never mixed
    with new files. On any exception (including KeyboardInterrupt) the temporary folder is
    removed and ``path`` is left as it was.

    Raises:
        OutputExistsError: ``path`` exists, is not empty and ``force`` is false (checked before
            and again at the end).
        OutputError: the folder cannot be written (see :func:`check_output_folder`), or the
            file system failed while writing (the message names ``path``).
    """
    import shutil

    target = check_output_folder(path, force=force)
    shown = Path(path)
    tmp = target.parent / f".{target.name}.tmp-{secrets.token_hex(4)}"
    created = [p for p in [target.parent, *target.parent.parents] if not p.exists()]  # made here
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
    except OSError as exc:
        raise OutputError(f"cannot write output {shown}: {_os_reason(exc)}") from exc
    try:
        yield tmp
        _move_into_place(tmp, target, shown, force)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in created:  # parents created for this output, deepest first, if still empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        # a file system failure inside (also one already wrapped by atomic_write, which names the
        # temporary file) is reported for the output folder the user asked for
        cause = exc.__cause__ if isinstance(exc, OutputError) else exc
        if isinstance(cause, OSError) and not isinstance(cause, XfitError):
            raise OutputError(f"cannot write output {shown}: {_os_reason(cause)}") from cause
        raise


def _move_into_place(tmp: Path, target: Path, shown: Path, force: bool) -> None:
    """Rename the complete ``tmp`` folder to ``target``, replacing an old one only with force."""
    import shutil

    if not target.exists():
        os.rename(tmp, target)  # also fine if an empty folder appeared meanwhile
        return
    if not target.is_dir():
        raise OutputError(f"output {shown} exists and is a file, not a folder")
    if any(target.iterdir()):
        if not force:
            raise OutputExistsError(f"output {shown} exists; use --force to replace it")
        old = target.parent / f".{target.name}.old-{secrets.token_hex(4)}"
        os.rename(target, old)
        try:
            os.rename(tmp, target)
        except BaseException:
            os.rename(old, target)  # put the old folder back
            raise
        shutil.rmtree(old, ignore_errors=True)
        if old.exists():
            warnings.warn(f"could not delete the replaced folder {old}")
        return
    os.rename(tmp, target)  # replaces the empty folder


# ----------------------------------------------------------------------------- folders being written

#: The file that marks a folder as being written by a process (``pid host``): :func:`folder_lock`.
LOCK_NAME = ".lock"


def _lock_holder(path: Path) -> str | None:
    """The ``pid host`` line of a lock file, ``None`` when it is gone."""
    try:
        return path.read_text(errors="replace").strip()
    except FileNotFoundError:
        return None


def holder_text(holder: str) -> str | None:
    """``pid 123 on host`` of a lock line (:func:`folder_lock`), ``None`` for one no xfit run
    writes (damaged: its bytes are not shown)."""
    pid, _, host = holder.partition(" ")
    if not (pid.isascii() and pid.isdigit() and host and host.isascii() and host.isprintable() and " " not in host):
        return None
    return f"pid {pid} on {host}"


def _is_stale(holder: str) -> bool:
    """Whether a lock was left by a process of this host that no longer runs."""
    pid, _, host = holder.partition(" ")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):  # it runs under another user, or is no pid
        pass
    return False


def _take_lock(path: Path) -> str:
    """Create the lock file (``O_CREAT | O_EXCL``) holding ``pid host``; take over, with a warning,
    one left by a process of this host that no longer runs. Returns the line written.

    Raises:
        OutputExistsError: another process holds it. OutputError: the folder cannot be written.
    """
    mine = f"{os.getpid()} {socket.gethostname()}"
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _lock_holder(path)
            if holder is not None and not _is_stale(holder):
                who = holder_text(holder)
                if who is None:
                    raise OutputExistsError(f"{path.parent} holds a lock file {path} that no xfit run wrote (not 'pid "
                                            f"host'); delete it if no run is going on") from None
                raise OutputExistsError(f"{path.parent} is being written by another xfit run ({who}); wait for it, "
                                        f"or delete {path} if no run is going on") from None
            if holder is not None:
                aside = path.with_name(f"{LOCK_NAME}.stale-{secrets.token_hex(4)}")
                with contextlib.suppress(FileNotFoundError):  # another process may take it over first
                    os.rename(path, aside)
                    aside.unlink()
                    warnings.warn(f"{path}: took over the lock of pid {holder.partition(' ')[0]}, which no longer runs")
            continue
        except OSError as exc:
            raise OutputError(f"cannot write {path.parent}: {exc.strerror or exc}") from exc
        with os.fdopen(fd, "w") as fh:
            fh.write(mine + "\n")
        return mine
    raise OutputExistsError(f"{path.parent}: cannot take the lock {path}; another xfit run is starting on it")


def held_lock(folder: PathLike) -> str | None:
    """The ``pid host`` of the process holding ``folder``'s lock (:func:`folder_lock`), or ``None``
    when there is none or it was left by a process of this host that no longer runs."""
    holder = _lock_holder(Path(folder) / LOCK_NAME)
    return None if holder is None or _is_stale(holder) else holder


@contextlib.contextmanager
def folder_lock(folder: PathLike) -> Iterator[None]:
    """Hold ``folder/.lock`` (:data:`LOCK_NAME`) while a process writes ``folder`` (created here
    if missing): an evaluate run, a sweep, a training run. A second writer is refused with one
    line instead of both losing work. On exit the lock is released, and the folder (and parents)
    created here are removed again if still empty.

    Raises:
        OutputExistsError: another process holds the lock, or ``folder`` is a file.
        OutputError: the folder cannot be written (read-only, full, permission).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputExistsError(f"{folder} exists and is a file, not a folder")
    created = [p for p in [folder, *folder.parents] if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot write {folder}: {exc.strerror or exc}") from exc
    lock = folder / LOCK_NAME
    mine = None
    try:
        mine = _take_lock(lock)
        yield
    finally:
        if mine is not None and _lock_holder(lock) == mine:  # a forced run's folder was replaced, lock and all
            lock.unlink(missing_ok=True)
        for p in created:
            with contextlib.suppress(OSError):
                p.rmdir()


# ----------------------------------------------------------------------------- NIfTI volumes


@dataclass
class Volume:
    """A 3D volume with its voxel-index -> world (RAS+ mm) affine.

    Attributes:
        data: ``[I, J, K]`` voxel values (float32 HU for CT, integers for label maps).
        affine: ``[4, 4]`` float64 voxel index -> world mm.
    """

    data: np.ndarray
    affine: np.ndarray

    def __post_init__(self) -> None:
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.affine.shape != (4, 4):
            raise InputError(f"affine must be 4x4, got shape {self.affine.shape}")
        if np.asarray(self.data).ndim != 3:
            raise InputError(f"volume data must be 3D [I, J, K], got shape {np.shape(self.data)}")

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Voxel size (mm) along I, J, K: the column norms of the affine."""
        norms = np.linalg.norm(self.affine[:3, :3], axis=0)
        return (float(norms[0]), float(norms[1]), float(norms[2]))

    @property
    def shape(self) -> tuple[int, int, int]:
        """Grid size ``(I, J, K)``."""
        i, j, k = self.data.shape
        return (int(i), int(j), int(k))

    @property
    def centre_mm(self) -> np.ndarray:
        """World position ``[3]`` (mm) of the volume centre (midpoint of the corner voxels)."""
        centre_idx = (np.asarray(self.shape, dtype=np.float64) - 1.0) / 2.0
        return self.affine[:3, :3] @ centre_idx + self.affine[:3, 3]


def read_nifti(path: PathLike, *, dtype: Any = np.float32) -> Volume:
    """Read a NIfTI (``.nii`` / ``.nii.gz``) volume reoriented to the closest canonical RAS+.

    A 4D image with a trailing singleton dimension is squeezed to 3D. Float dtypes get the
    header scaling applied; integer dtypes (label maps) are rounded.

    Raises:
        InputError: missing or unreadable file, not 3D, empty (a zero-size axis), non-finite
            values. The message names the file.
    """
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        img = nib.load(str(path))
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise InputError(f"{path}: not a NIfTI file ({type(img).__name__})")
        shape = tuple(img.shape)
        while len(shape) > 3 and shape[-1] == 1:
            img = img.slicer[(Ellipsis, 0)]
            shape = tuple(img.shape)
        if len(shape) != 3:
            raise InputError(f"{path}: expected a 3D volume, got shape {shape}")
        if 0 in shape:
            raise InputError(f"{path}: the volume is empty (shape {shape})")
        img = nib.as_closest_canonical(img)
        if np.issubdtype(np.dtype(dtype), np.floating):
            data = img.get_fdata(dtype=np.float64).astype(dtype, copy=False)
        else:
            raw = np.asanyarray(img.dataobj)
            if not np.all(np.isfinite(raw)):
                raise InputError(f"{path}: the volume holds NaN or infinite values")
            data = np.rint(raw).astype(dtype) if np.issubdtype(raw.dtype, np.floating) else raw.astype(dtype)
        affine = np.asarray(img.affine, dtype=np.float64)
    except InputError:
        raise
    except Exception as exc:  # nibabel raises many types for corrupt/foreign files
        raise InputError(f"{path}: cannot read as NIfTI ({type(exc).__name__}: {_one_line(exc)})") from exc
    if np.issubdtype(data.dtype, np.floating) and not np.all(np.isfinite(data)):
        raise InputError(f"{path}: the volume holds NaN or infinite values")
    if not np.all(np.isfinite(affine)):
        raise InputError(f"{path}: the affine is not finite")
    return Volume(data=np.ascontiguousarray(data), affine=affine)


def _one_line(exc: BaseException) -> str:
    """An exception message on one line (nibabel/PIL messages may span several)."""
    return " ".join(str(exc).split())


def _to_numpy(x: np.ndarray | Tensor) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def write_nifti(
    path: PathLike,
    data: np.ndarray | Tensor,
    affine: np.ndarray | Tensor,
    *,
    force: bool = False,
    dtype: Any = None,
) -> Path:
    """Write a 3D volume ``[I, J, K]`` as NIfTI (``.nii`` or ``.nii.gz`` from the suffix), atomically.

    With ``dtype=None`` integer/bool arrays (label maps) are stored as int16 and floats as
    float32. qform and sform both hold ``affine`` (scanner code), units are mm.

    Raises:
        OutputExistsError: ``path`` exists and ``force`` is false.
        InputError: wrong shape/affine, or integers outside the int16 range.
    """
    import nibabel as nib

    path = Path(path)
    if not (path.name.endswith(".nii") or path.name.endswith(".nii.gz")):
        raise InputError(f"{path}: a NIfTI file name must end with .nii or .nii.gz")
    arr = _to_numpy(data)
    aff = _to_numpy(affine).astype(np.float64)
    if arr.ndim != 3:
        raise InputError(f"{path}: volume data must be 3D [I, J, K], got shape {arr.shape}")
    if aff.shape != (4, 4):
        raise InputError(f"{path}: affine must be 4x4, got shape {aff.shape}")
    if dtype is None:
        if arr.dtype == bool or np.issubdtype(arr.dtype, np.integer):
            if arr.size and (arr.min() < np.iinfo(np.int16).min or arr.max() > np.iinfo(np.int16).max):
                raise InputError(f"{path}: label values do not fit int16")
            dtype = np.int16
        else:
            dtype = np.float32
    arr = np.ascontiguousarray(arr.astype(dtype))
    img = nib.Nifti1Image(arr, aff)
    img.set_qform(aff, code=1)
    img.set_sform(aff, code=1)
    img.header.set_xyzt_units("mm", "sec")
    with atomic_write(path, force=force) as tmp:
        nib.save(img, str(tmp))
    return path


def _spacing3(spacing_mm: float | Sequence[float]) -> np.ndarray:
    s = np.asarray(spacing_mm, dtype=np.float64).reshape(-1)
    if s.size == 1:
        s = np.repeat(s, 3)
    if s.size != 3 or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise InputError(f"spacing_mm must be one positive number or three, got {spacing_mm!r}")
    return s


def resample(
    volume: Volume,
    spacing_mm: float | Sequence[float],
    *,
    order: int = 1,
    shape: Sequence[int] | None = None,
    cval: float = -1000.0,
) -> Volume:
    """Resample a volume to a new voxel spacing, keeping its axis directions and world centre.

    The output grid keeps the physical extent (``shape_out ~ shape_in * spacing_in /
    spacing_out``) and its centre voxel position coincides with the input's. ``shape`` forces the
    output grid size (crop/pad about the same centre); points outside the input get ``cval``.

    Args:
        volume: input volume ``[I, J, K]``.
        spacing_mm: new voxel size in mm, one number (isotropic) or three.
        order: spline order, 1 = trilinear (intensities), 0 = nearest (label maps).
        shape: optional output grid ``(I, J, K)``.
        cval: fill value outside the input (-1000 = air in HU; use 0 for label maps).
    Returns:
        A new :class:`Volume` of the input dtype.
    """
    s_out = _spacing3(spacing_mm)
    a_in = volume.affine
    s_in = np.asarray(volume.spacing_mm)
    n_in = np.asarray(volume.shape, dtype=np.float64)
    if shape is None:
        n_out = np.maximum(1, np.rint(n_in * s_in / s_out)).astype(int)
    else:
        n_out = np.asarray(shape, dtype=int).reshape(-1)
        if n_out.size != 3 or np.any(n_out < 1):
            raise InputError(f"shape must be three positive sizes, got {shape!r}")
    directions = a_in[:3, :3] / s_in[None, :]
    a_out = np.eye(4)
    a_out[:3, :3] = directions * s_out[None, :]
    a_out[:3, 3] = volume.centre_mm - a_out[:3, :3] @ ((n_out - 1.0) / 2.0)
    return resample_onto(volume, a_out, n_out, order=order, cval=cval)


def resample_onto(volume: Volume, affine: np.ndarray, shape: Sequence[int], *, order: int = 1,
                  cval: float = -1000.0) -> Volume:
    """Resample a volume onto any grid: voxel index -> world mm ``affine`` ``[4, 4]`` and ``shape``.

    Both volumes live in one world frame; output voxels whose world point lies outside the input
    get ``cval`` (-1000 = air in HU; 0 for label maps). ``order``: 1 trilinear, 0 nearest.
    """
    from scipy import ndimage

    n_out = np.asarray(shape, dtype=int).reshape(-1)
    if n_out.size != 3 or np.any(n_out < 1):
        raise InputError(f"shape must be three positive sizes, got {shape!r}")
    a_out = np.asarray(affine, dtype=np.float64)
    n_in = np.asarray(volume.shape, dtype=np.float64)
    out_to_in = np.linalg.inv(volume.affine) @ a_out  # output index -> input index
    matrix, offset = out_to_in[:3, :3], out_to_in[:3, 3]

    src = volume.data
    work = src if np.issubdtype(src.dtype, np.floating) or order == 0 else src.astype(np.float32)
    out = ndimage.affine_transform(
        work, matrix, offset=offset, output_shape=tuple(int(x) for x in n_out), order=order, mode="nearest"
    )
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in n_out], indexing="ij")).reshape(3, -1)
    corners_in = matrix @ corners + offset[:, None]
    eps = 1e-6
    if np.any(corners_in < -0.5 - eps) or np.any(corners_in > (n_in - 0.5 + eps)[:, None]):
        inside = ndimage.affine_transform(
            np.ones(volume.shape, np.uint8), matrix, offset=offset,
            output_shape=tuple(int(x) for x in n_out), order=0, mode="constant", cval=0,
        )
        out = np.where(inside.astype(bool), out, np.asarray(cval, dtype=out.dtype))
    if out.dtype != src.dtype:
        out = np.rint(out) if not np.issubdtype(src.dtype, np.floating) else out
        out = out.astype(src.dtype)
    return Volume(data=np.ascontiguousarray(out), affine=a_out)


# ----------------------------------------------------------------------------- 2D images


def _to_gray(arr: np.ndarray) -> np.ndarray:
    """``[R, C, 3|4]`` colour (alpha dropped) or ``[R, C, 2]`` gray+alpha -> ``[R, C]`` luminance."""
    if arr.shape[-1] == 2:
        return arr[..., 0]
    gray = arr[..., :3].astype(np.float64) @ _LUMA
    if np.issubdtype(arr.dtype, np.integer):
        return np.clip(np.rint(gray), 0, np.iinfo(arr.dtype).max).astype(arr.dtype)
    return gray.astype(arr.dtype)


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(str(path)) as tif:
        series = tif.series[0]
        axes, arr = series.axes, series.asarray()
    if "S" in axes:  # colour samples, maybe planar (SYX)
        arr = np.moveaxis(arr, axes.index("S"), -1)
        axes = axes.replace("S", "") + "S"
    squeeze = tuple(i for i, a in enumerate(axes) if a not in "YXS" and arr.shape[i] == 1)
    arr = np.squeeze(arr, axis=squeeze) if squeeze else arr
    axes = "".join(a for i, a in enumerate(axes) if i not in squeeze)
    if axes not in ("YX", "YXS"):
        raise InputError(f"{path}: expected one 2D image, got a stack with axes {axes} shape {arr.shape}")
    return arr


def _check_image_size(path: Path, rows: int, cols: int) -> None:
    from .geometry import MAX_DETECTOR_PIXELS, MAX_DETECTOR_SIDE

    if rows > MAX_DETECTOR_SIDE or cols > MAX_DETECTOR_SIDE or rows * cols > MAX_DETECTOR_PIXELS:
        raise InputError(f"{path}: {rows}x{cols} pixels is too large for an X-ray (at most {MAX_DETECTOR_SIDE} "
                         f"per side and {MAX_DETECTOR_PIXELS} in all; downsample it)")


def _read_pil(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(str(path)) as im:
        _check_image_size(path, im.size[1], im.size[0])  # from the header, before decoding
        if getattr(im, "n_frames", 1) > 1:
            raise InputError(f"{path}: expected one 2D image, got a stack of {im.n_frames} frames")
        if im.mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "RGB")
        elif im.mode == "1":
            im = im.convert("L")
        elif im.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            im = im.convert("RGB")
        arr = np.asarray(im)
        if im.mode == "I":  # 32-bit integer container (some 16-bit files)
            if arr.size and (arr.min() < 0 or arr.max() > 65535):
                raise InputError(f"{path}: 32-bit integer images are not supported (8/16-bit only)")
            arr = arr.astype(np.uint16)
    return arr.astype(arr.dtype.newbyteorder("=")) if arr.dtype.byteorder not in "=|" else arr


def read_image_raw(path: PathLike) -> tuple[np.ndarray, int]:
    """Read a 2D grayscale image without rescaling.

    RGB(A) images are converted to luminance (BT.601). Float images (e.g. float TIFF) are
    returned as float32 with ``bit_depth = 0``.

    Returns:
        ``([R, C] uint8 | uint16 | float32, bit_depth)`` with bit_depth 8, 16 or 0 (float).
    Raises:
        InputError: missing or unreadable file, 3D stacks, unsupported pixel types, NaN.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    is_tiff = path.suffix.lower() in (".tif", ".tiff")
    try:
        arr = _read_tiff(path) if is_tiff else _read_pil(path)
    except InputError:
        raise
    except Exception as exc:
        if not is_tiff:
            raise InputError(f"{path}: cannot read as an image ({type(exc).__name__}: {_one_line(exc)})") from exc
        try:
            arr = _read_pil(path)
        except InputError:
            raise
        except Exception as exc2:
            raise InputError(f"{path}: cannot read as an image ({type(exc2).__name__}: {_one_line(exc2)})") from exc2
    if arr.ndim == 3 and arr.shape[-1] in (2, 3, 4):
        arr = _to_gray(arr)
    if arr.ndim != 2:
        raise InputError(f"{path}: expected a 2D grayscale image, got shape {arr.shape}")
    if arr.size == 0:
        raise InputError(f"{path}: the image is empty (shape {arr.shape})")
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255, 8
    if arr.dtype == np.uint8:
        return arr, 8
    if arr.dtype == np.uint16:
        return arr, 16
    if np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
        if not np.all(np.isfinite(arr)):
            raise InputError(f"{path}: the image holds NaN or infinite values")
        return arr, 0
    if np.issubdtype(arr.dtype, np.integer) and arr.min() >= 0 and arr.max() <= 65535:
        return arr.astype(np.uint16), 16
    raise InputError(f"{path}: unsupported pixel type {arr.dtype} (8/16-bit grayscale expected)")


def read_image(path: PathLike) -> np.ndarray:
    """Read an 8/16-bit grayscale PNG/JPEG/TIFF as float32 ``[R, C]`` in ``[0, 1]``.

    8-bit values are divided by 255, 16-bit by 65535; RGB(A) is converted to luminance. Float
    images are min-max normalized unless already within ``[0, 1]``.

    Raises:
        InputError: missing or unreadable file, 3D stacks, unsupported pixel types.
    """
    arr, bits = read_image_raw(path)
    if bits == 8:
        return arr.astype(np.float32) / np.float32(255.0)
    if bits == 16:
        return arr.astype(np.float32) / np.float32(65535.0)
    return _normalize(arr)


def _normalize(arr: np.ndarray) -> np.ndarray:
    """Float image to ``[0, 1]``: kept if already inside, else min-max (constant -> zeros)."""
    arr = arr.astype(np.float32)
    lo, hi = float(arr.min()), float(arr.max())
    if lo >= 0.0 and hi <= 1.0:
        return arr
    if hi <= lo:
        return np.zeros_like(arr)
    return (arr - lo) / np.float32(hi - lo)


def _write_png(path: PathLike, image: np.ndarray, *, force: bool) -> Path:
    from PIL import Image

    path = Path(path)
    with atomic_write(path, force=force) as tmp:
        Image.fromarray(image).save(str(tmp), format="PNG")
    return path


def write_png16(path: PathLike, image_uint16: np.ndarray | Tensor, *, force: bool = False) -> Path:
    """Write a ``[R, C]`` uint16 image as a 16-bit grayscale PNG, atomically."""
    arr = _to_numpy(image_uint16)
    if arr.ndim != 2:
        raise InputError(f"{path}: a 16-bit PNG must be 2D [R, C], got shape {arr.shape}")
    if arr.dtype != np.uint16:
        raise InputError(f"{path}: write_png16 expects uint16 data, got {arr.dtype}")
    return _write_png(path, np.ascontiguousarray(arr), force=force)


def write_png8(path: PathLike, image_uint8_or_rgb: np.ndarray | Tensor, *, force: bool = False) -> Path:
    """Write a ``[R, C]`` gray or ``[R, C, 3|4]`` RGB(A) uint8 image as PNG (previews), atomically."""
    arr = _to_numpy(image_uint8_or_rgb)
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4))):
        raise InputError(f"{path}: expected [R, C] or [R, C, 3|4], got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise InputError(f"{path}: write_png8 expects uint8 data, got {arr.dtype}")
    return _write_png(path, np.ascontiguousarray(arr), force=force)


# ----------------------------------------------------------------------------- sidecars


def sidecar_path(image_path: PathLike) -> Path:
    """The JSON sidecar next to an image: ``ap.png`` -> ``ap.json``."""
    return Path(image_path).with_suffix(".json")


#: Sidecars and config files larger than this are refused (they hold a few numbers).
MAX_SMALL_FILE_BYTES = 1 << 20


def _read_small_text(path: Path, what: str) -> str:
    try:
        size = path.stat().st_size
        if size > MAX_SMALL_FILE_BYTES:
            raise InputError(f"{path}: {size} bytes is too large for a {what} "
                             f"(at most {MAX_SMALL_FILE_BYTES // 1024} KiB)")
        return path.read_text(encoding="utf-8-sig")  # a byte-order mark (Windows editors) is fine
    except FileNotFoundError as exc:
        raise InputError(f"{path}: file not found") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({_os_reason(exc)})") from exc


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise InputError(f"key {key!r} appears twice")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise InputError(f"{name} is not valid JSON (numbers must be finite)")


def parse_json_strict(text: str) -> Any:
    """``json.loads`` that rejects ``NaN``/``Infinity``, duplicate keys and absurd nesting.

    Raises:
        InputError: with the reason (and line/column for syntax errors); the caller adds the file.
    """
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON ({exc})") from exc
    except RecursionError as exc:
        raise InputError("invalid JSON (nested too deeply)") from exc


def read_sidecar(path: PathLike) -> dict:
    """Read a JSON sidecar (an object), strictly: ``NaN``/``Infinity`` literals, duplicate keys
    and files over :data:`MAX_SMALL_FILE_BYTES` are refused. The keys and values are checked
    against the sidecar schema by :func:`xfit.geometry.validate_sidecar` when the X-ray is read.

    Raises:
        InputError: missing file, invalid JSON or not a JSON object (the message names the file).
    """
    path = Path(path)
    text = _read_small_text(path, "sidecar")
    try:
        data = parse_json_strict(text)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from exc
    if not isinstance(data, dict):
        raise InputError(f"{path}: a sidecar must be a JSON object, got {type(data).__name__}")
    return data


def read_yaml_mapping(path: PathLike, what: str = "config") -> dict:
    """Read a YAML config file as a mapping, strictly.

    YAML 1.2 scalars: only ``true``/``false`` are booleans (``yes``, ``on``, ``n`` stay strings
    and are then rejected by the schema), ``1e-3`` is a float, duplicate keys are an error.
    An empty file is an empty mapping.

    Raises:
        InputError: missing, unreadable or too large file, invalid YAML, or not a mapping (the
            message names the file).
    """
    import yaml

    path = Path(path)
    text = _read_small_text(path, what)
    try:
        data = yaml.load(text, Loader=_strict_yaml_loader())  # noqa: S506 (a SafeLoader subclass)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: invalid YAML ({_one_line(exc)})") from exc
    except RecursionError as exc:
        raise InputError(f"{path}: invalid YAML (nested too deeply)") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"{path}: a {what} must be a YAML mapping of keys to values, got {type(data).__name__}")
    return data


def _make_strict_yaml_loader() -> type:
    import re

    import yaml

    class StrictLoader(yaml.SafeLoader):
        """SafeLoader with YAML 1.2 booleans and floats and no duplicate keys."""

    StrictLoader.yaml_implicit_resolvers = {
        k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
        for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    StrictLoader.add_implicit_resolver(
        "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
    StrictLoader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"), list("-+0123456789."))

    def construct_mapping(loader, node, deep=False):  # type: ignore[no-untyped-def]
        loader.flatten_mapping(node)
        out = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError as exc:
                raise InputError(f"line {key_node.start_mark.line + 1}: a key must be a plain value") from exc
            if key in out:
                raise InputError(f"line {key_node.start_mark.line + 1}: key {key!r} appears twice")
            out[key] = loader.construct_object(value_node, deep=deep)
        return out

    StrictLoader.add_constructor("tag:yaml.org,2002:map", construct_mapping)
    return StrictLoader


@functools.lru_cache(maxsize=1)
def _strict_yaml_loader() -> type:
    return _make_strict_yaml_loader()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.generic,)):
        return obj.item()
    if isinstance(obj, (np.ndarray, Tensor)):
        return _to_numpy(obj).tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def finite_json(obj: Any) -> Any:
    """A copy of nested dicts/lists/tuples with NaN and infinite floats as None (strict JSON)."""
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return finite_json(obj.tolist())
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    return obj


def write_sidecar(path: PathLike, data: dict, *, force: bool = False) -> Path:
    """Write a dictionary as pretty JSON (2-space indent, trailing newline), atomically."""
    path = Path(path)
    text = json.dumps(data, indent=2, default=_json_default, allow_nan=False) + "\n"
    with atomic_write(path, force=force) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- X-rays


@dataclass
class XRay:
    """An X-ray image with its view.

    Attributes:
        image: ``[R, C]`` float32, bright = attenuating, in the conventions' orientation (already
            un-flipped / inverted). Line integrals when ``line_integral_scale`` is known, else
            intensities in ``[0, 1]``.
        view: the :class:`~xfit.geometry.View` (``shape`` = image shape).
        line_integral_scale: the PNG scale of the sidecar, or None for uncalibrated images.
        path: the file read.
        sources: for each geometry value (``angle_deg``, ``sdd_mm``, ``sod_mm``,
            ``pixel_spacing_mm``, ``projection``, ``orientation``, ``invert``...), the DICOM tag,
            option, sidecar key or default that supplied it (recorded in ``report.json``).
    """

    image: np.ndarray
    view: View
    line_integral_scale: float | None
    path: Path
    sources: dict[str, str] = field(default_factory=dict)
    #: how the file's pixel array became :attr:`image`: (transposed, rows flipped, columns
    #: flipped), applied in that order; see :func:`stored_to_image`
    orientation: tuple[bool, bool, bool] = (False, False, False)
    #: (rows, cols) of the file's pixel array
    stored_shape: tuple[int, int] | None = None


def stored_to_image(rc: Sequence[float], stored_shape: Sequence[int], orientation: Sequence[bool]) -> tuple[float, float]:
    """A pixel (row, col) of the file's own array (as a viewer shows it) -> the same pixel of the
    image as xfit orients it (:attr:`XRay.image`: transposed, then rows, then columns flipped)."""
    transpose, flip_ud, flip_lr = (bool(x) for x in orientation)
    (r, c), (rows, cols) = (float(x) for x in rc), (int(n) for n in stored_shape)
    if transpose:
        r, c, rows, cols = c, r, cols, rows
    if flip_ud:
        r = rows - 1 - r
    if flip_lr:
        c = cols - 1 - c
    return r, c


def write_xray(
    path_png: PathLike,
    line_integrals: np.ndarray | Tensor,
    view: View,
    *,
    line_integral_scale: float | None = None,
    force: bool = False,
) -> float:
    """Write a DRR as a 16-bit PNG plus its JSON sidecar (both atomically).

    Pixel value ``round(65535 * p / scale)`` clipped to ``[0, 65535]`` (bright = attenuating).

    Args:
        path_png: output image path (the sidecar goes to :func:`sidecar_path`).
        line_integrals: ``[R, C]`` line integrals ``p`` (dimensionless), ``R, C = view.shape``.
        view: the view of the image.
        line_integral_scale: value of ``p`` mapped to 65535; default
            ``max(10, ceil(1.05 * max p))``.
    Returns:
        The scale used.
    Raises:
        InputError: wrong shape or non-finite values. GeometryError: shape differs from the view.
        OutputExistsError: the PNG or sidecar exists and ``force`` is false (nothing is written).
    """
    path_png = Path(path_png)
    p = _to_numpy(line_integrals).astype(np.float64)
    if p.ndim != 2:
        raise InputError(f"line integrals must be 2D [R, C], got shape {p.shape}")
    if tuple(p.shape) != tuple(view.shape):
        raise GeometryError(f"image shape {p.shape} differs from the view's detector shape {view.shape}")
    if not np.all(np.isfinite(p)):
        raise InputError("line integrals hold NaN or infinite values")
    if line_integral_scale is None:
        line_integral_scale = max(10.0, float(math.ceil(float(p.max()) * 1.05)))
    scale = float(line_integral_scale)
    if not math.isfinite(scale) or scale <= 0:
        raise InputError(f"line_integral_scale must be > 0, got {line_integral_scale!r}")
    side = sidecar_path(path_png)
    for target in (path_png, side):
        _check_writable(target, force)
    pixels = np.clip(np.rint(65535.0 * p / scale), 0, 65535).astype(np.uint16)
    write_png16(path_png, pixels, force=force)
    write_sidecar(side, view.to_sidecar(line_integral_scale=scale), force=force)
    return scale


def write_radiograph(
    path_png: PathLike,
    codes: np.ndarray,
    bits: int,
    view: View,
    *,
    invert: bool = False,
    force: bool = False,
) -> Path:
    """Write a processed (uncalibrated) radiograph as PNG plus sidecar, both atomically.

    ``bits`` <= 8: an 8-bit PNG of the codes; else a 16-bit PNG with the codes spread over the
    full range (``round(code * 65535 / (2^bits - 1))``, so reading divides back to ``[0, 1]``).
    The sidecar holds the view, no ``line_integral_scale`` (the image is not line integrals) and
    ``invert: true`` for MONOCHROME1 images (bone dark), so :func:`read_xray` reads them right.

    Args:
        codes: ``[R, C]`` integer codes in ``[0, 2^bits - 1]``; view: its view (shape = codes.shape).
    Raises:
        InputError: bad codes or bit depth. OutputExistsError: a file exists and ``force`` is false.
    """
    path_png = Path(path_png)
    arr = _to_numpy(codes)
    top = (1 << int(bits)) - 1 if isinstance(bits, (int, np.integer)) and 1 <= bits <= 16 else None
    if top is None or arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0 or arr.max() > top:
        raise InputError(f"codes must be [R, C] integers in [0, 2^bits - 1] with bits in 1..16, got {arr.dtype} "
                         f"{arr.shape} and bits {bits!r}")
    if tuple(arr.shape) != tuple(view.shape):
        raise GeometryError(f"image shape {arr.shape} differs from the view's detector shape {view.shape}")
    side = sidecar_path(path_png)
    for target in (path_png, side):
        _check_writable(target, force)
    if bits <= 8:
        write_png8(path_png, np.rint(arr.astype(np.float64) * 255.0 / top).astype(np.uint8), force=force)
    else:
        write_png16(path_png, np.rint(arr.astype(np.float64) * 65535.0 / top).astype(np.uint16), force=force)
    data = view.to_sidecar(line_integral_scale=None)
    if invert:
        data["invert"] = True
    write_sidecar(side, data, force=force)
    return path_png


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in _DICOM_SUFFIXES:
        return True
    try:
        with path.open("rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def read_dicom(path: PathLike) -> tuple[np.ndarray, dict]:
    """Read a single-frame DICOM X-ray and the geometry its tags give (see :mod:`xfit.dicom`).

    RescaleSlope/Intercept (and a VOILUTSequence) are applied, MONOCHROME1 / PresentationLUTShape
    INVERSE are inverted (so bright = attenuating), and the result is min-max normalized to
    ``[0, 1]``. The image is returned as stored (not yet flipped to the beam's-eye view:
    :func:`read_xray` does that from PatientOrientation).

    Returns:
        ``([R, C] float32 image, geometry dict)`` with the sidecar keys the tags supply:
        ``angle_deg`` (ViewPosition, or the C-arm PositionerPrimaryAngle as theta = 180 - angle),
        ``sdd_mm``, ``sod_mm``, ``pixel_spacing_mm`` (detector plane) and ``pose`` (a cranial or
        caudal tilt). An unusable pixel spacing tag (``PixelSpacing 0\\0``) gives no
        ``pixel_spacing_mm``.
    Raises:
        InputError: unreadable file, no pixel data, multi-frame or colour data, contradictory tags.
    """
    from .dicom import read_dataset

    info = read_dataset(path)
    return info.image, dict(info.values)


def read_pixels(path: PathLike) -> np.ndarray:
    """The image of an X-ray file as stored, without its geometry: :func:`read_dicom`'s image for
    DICOM, :func:`read_image` otherwise (for checks on the pixels alone).

    Raises:
        InputError: a missing or unreadable file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    if _is_dicom(path):
        from .dicom import read_dataset

        return read_dataset(path).image
    return read_image(path)


def _geometry_sources(data: dict, overrides: dict, sidecar_name: str | None, defaulted: set) -> dict[str, str]:
    """Which option, sidecar key or default supplied each geometry value of a non-DICOM image."""
    names = {"angle_deg": "--angles", "sdd_mm": "--sdd", "sod_mm": "--sod", "pixel_spacing_mm": "--pixel-spacing",
             "projection": "--projection"}
    out: dict[str, str] = {}
    for key in ("angle_deg", "sdd_mm", "sod_mm", "pixel_spacing_mm", "projection", "offset_px", "pose"):
        if overrides.get(key) is not None:
            out[key] = f"option {key} ({names.get(key, key)})"
        elif key in defaulted:
            out[key] = f"default ({data[key]:g} mm)"
        elif data.get(key) is not None:
            out[key] = f"{sidecar_name} {key}"
    return out


def read_xray(
    path: PathLike,
    *,
    angle_deg: float | None = None,
    sdd_mm: float | None = None,
    sod_mm: float | None = None,
    pixel_spacing_mm: float | Sequence[float] | None = None,
    projection: str | None = None,
    flip_lr: bool | None = None,
    invert: bool = False,
) -> XRay:
    """Read an X-ray (PNG/JPEG/TIFF or DICOM) and its geometry.

    PNG/JPEG/TIFF: geometry from the JSON sidecar (if present), then the keyword arguments
    (``None`` = not given, they win). Without a sidecar, sdd/sod default to 1800/1500 mm; the
    angle and the pixel spacing must come from somewhere.

    DICOM: the tags give the view, orientation, spacing and distances (:mod:`xfit.dicom`, one
    table); a sidecar or keyword argument may fill what the tags lack but must agree with what
    they give (else :class:`InputError` naming both). The image is transposed/flipped to the
    beam's-eye view from PatientOrientation (or, without it, from how such images are stored,
    with a warning).

    Intensities: 16-bit / 8-bit are divided by 65535 / 255 (DICOM is min-max normalized). If
    ``invert`` (or the sidecar's ``invert``) is set, ``x -> 1 - x``. If the sidecar holds a
    ``line_integral_scale``, the image is multiplied by it (line integrals). ``flip_lr`` (argument,
    else sidecar) means the stored image is mirrored left-right, so it is flipped back here.

    Returns:
        :class:`XRay` with ``image`` ``[R, C]`` float32 and ``sources`` (which tag, option,
        sidecar key or default supplied each geometry value).
    Raises:
        InputError: unreadable image or sidecar, contradictory DICOM tags / options.
        GeometryError: missing angle or pixel spacing, or an impossible geometry.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    from .geometry import validate_sidecar

    for name, value in (("flip_lr", flip_lr), ("invert", invert)):
        if value is not None and not isinstance(value, (bool, np.bool_)):
            raise InputError(f"{name} must be True or False, got {value!r}")
    side = sidecar_path(path)
    has_sidecar = side.is_file() and side != path
    if not has_sidecar and side != path and os.path.lexists(side):  # a folder, dangling link, loop
        raise InputError(f"{side}: the sidecar of {path.name} is not a readable file")
    side_data: dict[str, Any] = {}
    if has_sidecar:
        try:
            side_data = validate_sidecar(read_sidecar(side))
        except GeometryError as exc:
            raise GeometryError(f"{side}: {exc}") from exc
    overrides = dict(
        angle_deg=angle_deg, sdd_mm=sdd_mm, sod_mm=sod_mm,
        pixel_spacing_mm=pixel_spacing_mm, projection=projection,
    )
    if _is_dicom(path):
        from .dicom import read_dataset, resolve

        info = read_dataset(path)
        defaults = None if has_sidecar else {"sdd_mm": DEFAULT_SDD_MM, "sod_mm": DEFAULT_SOD_MM}
        image, data, sources = resolve(info, path, sidecar=side_data, sidecar_name=side.name, options=overrides,
                                       flip_lr=None if flip_lr is None else bool(flip_lr), defaults=defaults)
        orientation = tuple(data.pop("_orientation"))
        stored_shape = image.shape[::-1] if orientation[0] else image.shape
        overrides = {}  # merged (and checked against the tags) by resolve
        do_flip = False  # done by resolve
        if side_data.get("invert"):
            sources["invert"] = f"{side.name} invert" + (f" (after {sources['invert']})" if "invert" in sources else "")
    else:
        image = read_image(path)
        data = dict(side_data)
        defaulted: set = set()
        if not has_sidecar:
            for key, value in (("sdd_mm", DEFAULT_SDD_MM), ("sod_mm", DEFAULT_SOD_MM)):
                if key not in data:
                    data[key] = value
                    defaulted.add(key)
        side_flip = data.get("flip_lr")
        do_flip = bool(side_flip) if flip_lr is None else bool(flip_lr)
        orientation, stored_shape = (False, False, do_flip), image.shape
        sources = _geometry_sources(data, overrides, side.name, defaulted)
        if flip_lr is not None:
            sources["orientation"] = f"option flip_lr (--flip-lr) = {do_flip}"
        elif side_flip is not None:
            sources["orientation"] = f"{side.name} flip_lr = {do_flip}"
        else:
            sources["orientation"] = "default (stored as the beam's-eye view)"
        if data.get("invert"):
            sources["invert"] = f"{side.name} invert"
    if invert:
        after = f" (after {sources['invert']})" if "invert" in sources else ""
        sources["invert"] = "option invert (--invert)" + after
    if data.get("shape") is not None and tuple(data["shape"]) != tuple(image.shape):
        raise GeometryError(f"{side}: shape {data['shape']} differs from the image's {list(image.shape)} "
                            f"pixels (rows, cols) of {path.name}")
    if data.get("pixel_spacing_mm") is None and overrides.get("pixel_spacing_mm") is None:
        where = f"in {side.name} " if has_sidecar else ""
        raise GeometryError(f"{path}: the pixel spacing is unknown: give pixel_spacing_mm {where}or --pixel-spacing")
    if data.get("angle_deg") is None and overrides.get("angle_deg") is None:
        raise GeometryError(f"{path}: the view angle is unknown: give angle_deg in a sidecar or --angles")
    do_invert = bool(invert) or bool(side_data.get("invert"))
    scale = data.get("line_integral_scale")
    view_data = {k: v for k, v in data.items() if k not in ("flip_lr", "line_integral_scale", "invert", "shape")}
    try:
        view = View.from_sidecar(view_data, image.shape, **overrides)
    except GeometryError as exc:
        raise GeometryError(f"{path}: {exc}") from exc
    for key in ("sdd_mm", "sod_mm", "projection"):  # what nothing gave: the View's defaults
        if key not in sources:
            value = getattr(view, key)
            sources[key] = f"default ({value:g} mm)" if isinstance(value, float) else f"default ({value})"
    if do_invert:
        image = 1.0 - image
    if do_flip:
        image = np.fliplr(image)
    if scale is not None:
        scale = float(scale)  # validated by the schema: finite, in (0, 1e6]
        image = image * np.float32(scale)
    return XRay(image=np.ascontiguousarray(image, dtype=np.float32), view=view, line_integral_scale=scale, path=path,
                sources=sources, orientation=orientation, stored_shape=tuple(int(n) for n in stored_shape))


def crop_start(centre_vox: Sequence[float], size: int) -> list[int]:
    """First voxel index per axis of the ``size^3`` cube :func:`crop_centred` cuts around
    ``centre_vox`` (rounded to whole voxels)."""
    return [int(round(c - (size - 1) / 2)) for c in centre_vox]


def crop_centred(data: np.ndarray, centre_vox: Sequence[float], size: int, fill: float) -> np.ndarray:
    """Cut a ``size^3`` cube centred on a voxel position, padding with ``fill`` outside.

    Args:
        data: ``[I, J, K]`` array.
        centre_vox: fractional voxel index of the cube centre (rounded to the nearest voxel grid
            position that keeps the cube centre at ``(size-1)/2``, see :func:`crop_start`).
    """
    out = np.full((size,) * 3, fill, dtype=data.dtype)
    start = crop_start(centre_vox, size)
    src, dst = [], []
    for ax, s0 in enumerate(start):
        a0, a1 = max(s0, 0), min(s0 + size, data.shape[ax])
        if a1 <= a0:
            return out
        src.append(slice(a0, a1))
        dst.append(slice(a0 - s0, a1 - s0))
    out[tuple(dst)] = data[tuple(src)]
    return out
