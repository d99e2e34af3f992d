"""Writing files safely: atomic writes (temporary name, then rename), whole output folders,
pre-flight checks of output paths (existence, ``--force``, symlinks, permissions) and the
``.lock`` of a folder being written.

Every file is written atomically (temporary name in the same folder, then ``os.replace``) and an
existing output is never overwritten unless ``force=True`` (``docs/architecture.md``, "Files").
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import socket
import stat
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from torch import Tensor

from ..errors import OutputError, OutputExistsError, XfitError

PathLike = str | os.PathLike


def _one_line(exc: BaseException) -> str:
    """An exception message on one line (nibabel/PIL messages may span several)."""
    return " ".join(str(exc).split())


def _to_numpy(x: np.ndarray | Tensor) -> np.ndarray:
    """A tensor (detached, on the CPU) or array-like as a numpy array, for the writers."""
    if isinstance(x, Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


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
                raise OutputError(
                    f"cannot use output {path}: {here} is a dangling symlink (to {os.readlink(here)})"
                ) from exc
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


def portable_path(path: PathLike) -> str:
    """``path`` as a record (``settings.json``, ``evaluate-prior`` reports) names it: relative to
    the working directory when it lies under it (``xfit/data/prior-64.safetensors`` from a
    checkout), so that committed records name no machine's folders; else as given."""
    p, cwd = Path(path), Path.cwd().resolve()
    if p.is_absolute() and p.resolve().is_relative_to(cwd):
        return p.resolve().relative_to(cwd).as_posix()
    return str(path)


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
                    raise OutputExistsError(
                        f"{path.parent} holds a lock file {path} that no xfit run wrote (not 'pid "
                        f"host'); delete it if no run is going on"
                    ) from None
                raise OutputExistsError(
                    f"{path.parent} is being written by another xfit run ({who}); wait for it, "
                    f"or delete {path} if no run is going on"
                ) from None
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
