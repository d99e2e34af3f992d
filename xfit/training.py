"""What every trainer shares (the prior's :mod:`xfit.prior.train`, the baselines'
:mod:`xfit.baselines.train`): the run folder's rules and lock, its ``config.json`` and
``log.jsonl``, the options of the torchrun entry points, the checks of crops and losses, and the
RNG states gathered for a bit-exact resume.

A run folder holds ``config.json``, ``log.jsonl`` (one JSON record per logged step, appended),
``state.safetensors`` (:data:`STATE_FILE`, to resume) and what each trainer adds (its model,
samples, snapshots, ``cache/``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from .devices import AMP_CHOICES
from .distributed import rank_world
from .errors import InputError, OutputExistsError, XfitError
from .io import atomic_write
from .levels import parse_levels

#: The training state of a run folder (``--resume`` continues from it).
STATE_FILE = "state.safetensors"


def add_run_arguments(p) -> None:
    """The options a training entry point for torchrun shares (after its positional arguments):
    ``-o``, ``--config``, the collection's ``--masks --layout --levels --class-map --workers``,
    ``--amp``, ``--resume``, ``--force``, ``--device``, ``--max-steps``."""
    p.add_argument("-o", "--out", required=True)
    p.add_argument("--config", default=None)
    for name in ("--masks", "--layout", "--levels", "--class-map"):
        p.add_argument(name, default=None)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--amp", default="auto", choices=AMP_CHOICES)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--force", action="store_true")
    p.add_argument("--device", default=None)
    p.add_argument("--max-steps", type=int, default=None)


def rng_state_tensors(gen: torch.Generator, world: int) -> dict[str, torch.Tensor]:
    """Every process's RNG states (its generator ``gen`` and torch's global one) as
    ``rng.<rank>.gen`` / ``rng.<rank>.global`` uint8 tensors (gathered across ``world``
    processes), for bit-exact resume."""
    rng = {"gen": gen.get_state(), "global": torch.get_rng_state()}
    if world == 1:
        return {f"rng.0.{k}": v for k, v in rng.items()}
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, {k: v.tolist() for k, v in rng.items()})
    return {f"rng.{r}.{k}": torch.tensor(v, dtype=torch.uint8) for r, st in enumerate(gathered) for k, v in st.items()}


def write_run_config(run_dir: Path, cfg: Any) -> None:
    """The run's ``config.json`` (``cfg.to_dict()``), atomically."""
    with atomic_write(run_dir / "config.json", force=True) as tmp:
        Path(tmp).write_text(json.dumps(cfg.to_dict(), indent=2))


def require_run_config(run_dir: str | Path) -> None:
    """``--resume`` without ``--config`` takes the run's own ``config.json``: refuse (one line) a
    run folder that holds a training state but no ``config.json``, rather than resume with a
    default config that the state then does not match (reported as another architecture).

    Raises:
        InputError: ``config.json`` missing beside ``state.safetensors``.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").exists() and (run_dir / STATE_FILE).exists():
        raise InputError(
            f"{run_dir / 'config.json'} is missing, so the config the run was started with is unknown; "
            "resume with --config FILE (that config), or restart with --force"
        )


def check_run_folder(
    run_dir: Path,
    *,
    resume: bool,
    force: bool,
    rank: int,
    started: Callable[[Path], bool],
    config_matches: Callable[[dict], bool],
    clear: Callable[[Path], None],
) -> None:
    """The run-folder rules every trainer follows, before any work: ``--resume`` needs the
    folder's ``state.safetensors`` and its own ``config.json``; a started run (``started``) is not
    overwritten without ``force`` (then rank 0 ``clear`` s it); a file is not a run folder.

    Raises:
        InputError: nothing to resume, or another config. OutputExistsError: a started run
        without ``force`` or ``resume``, or a file in the folder's place.
    """
    from .io import parse_json_strict

    saved = run_dir / "config.json"
    if resume and saved.exists():
        try:
            saved_cfg = parse_json_strict(saved.read_text(errors="replace"))
        except InputError as exc:
            raise InputError(f"{saved}: cannot read the run's config: {exc}") from exc
        if not config_matches(saved_cfg):
            raise InputError(f"{run_dir} was trained with another config; resume with its config.json")
    # a run stopped (a full disk, a crash) before its first checkpoint has a log but no state: it
    # can only be restarted, so neither message sends the user to the other
    no_state = run_dir.is_dir() and not (run_dir / STATE_FILE).exists() and started(run_dir)
    if resume and not (run_dir / STATE_FILE).exists():
        raise InputError(
            f"nothing to resume: {run_dir / STATE_FILE} does not exist"
            + (" (the run stopped before its first checkpoint; restart it with --force)" if no_state else "")
        )
    if rank != 0:
        return
    if run_dir.exists() and not run_dir.is_dir():
        raise OutputExistsError(f"run folder {run_dir} exists and is a file")
    if not resume and started(run_dir):
        if not force:
            if no_state:
                raise OutputExistsError(
                    f"run folder {run_dir} holds a run that stopped before its first checkpoint "
                    f"(no {STATE_FILE}, nothing to resume); use --force to restart it"
                )
            raise OutputExistsError(
                f"run folder {run_dir} holds a started run; use --resume to continue or --force to restart"
            )
        clear(run_dir)


def read_log(path: Path) -> list[dict[str, Any]]:
    """The records of a run's ``log.jsonl``. The log is appended, so a crash mid-write leaves a
    torn last line: it is dropped with a warning.

    Raises:
        InputError: a damaged line before the last.
    """
    lines = [(n, ln) for n, ln in enumerate(path.read_text(errors="replace").splitlines(), 1) if ln.strip()]
    records = []
    for i, (n, line) in enumerate(lines):
        try:
            rec = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: nested too deeply
            rec = None
        if isinstance(rec, dict) and isinstance(rec.get("step"), int):
            records.append(rec)
        elif i == len(lines) - 1:
            warnings.warn(f"{path}: the last line is torn (a crash while it was written); dropped")
        else:
            raise InputError(f"{path}: line {n} is not a log record; repair or remove the log")
    return records


def trim_log(path: Path, step: int) -> None:
    """Keep the records of ``log.jsonl`` up to ``step`` (a resumed checkpoint's), so that the
    continued run appends after them (see :func:`read_log`)."""
    if not path.exists():
        return
    kept = [rec for rec in read_log(path) if rec["step"] <= step]
    with atomic_write(path, force=True) as tmp:
        Path(tmp).write_text("".join(json.dumps(rec) + "\n" for rec in kept))


def check_crops(volumes: Any, chunk: int = 64) -> None:
    """Refuse training crops that hold NaN or Inf (a damaged cache), read ``chunk`` at a time.

    Raises:
        InputError: naming the cache file.
    """
    where = getattr(volumes, "path", None)  # a CropStore's file
    hint = f" in {where}; remove {where.parent} to prepare them again" if where is not None else ""
    for start in range(0, len(volumes), chunk):
        if not bool(torch.isfinite(volumes[start : start + chunk]).all()):
            end = min(start + chunk, len(volumes)) - 1
            raise InputError(f"training crops {start}..{end} hold NaN or Inf{hint}")


def check_losses(logs: Mapping[str, float], step: int, device: torch.device) -> None:
    """Stop training at the first step whose logged terms are not all finite, on every process.

    N = 1 step: Adam's step after a non-finite loss already carries NaN into the weights, so later
    steps cannot recover; stopping before this step's checkpoint leaves the last finite one on disk.

    Raises:
        XfitError: which terms, and what to do.
    """
    bad = sorted(k for k, v in logs.items() if not math.isfinite(v))
    if rank_world()[1] > 1:  # every process stops together
        flag = torch.tensor([float(bool(bad))], device=device)
        dist.all_reduce(flag)
        bad = bad or (["a loss on another process"] if flag.item() else [])
    if bad:
        raise XfitError(
            f"training diverged at step {step}: {', '.join(bad)} not finite; the checkpoint on disk is "
            "the last one before; restart with a lower learning rate (--force)"
        )


def levels_arg(levels: str | tuple[int, ...] | list[int] | None) -> tuple[int, ...] | None:
    """A ``levels`` argument (``"T10-L5"``, labels or ``None`` = all) as level labels."""
    if levels is None:
        return None
    if isinstance(levels, str):
        return parse_levels(levels)
    return tuple(int(x) for x in levels)


def skip_lines(skipped: list[tuple[str, str]], limit: int = 10) -> list[list[str]]:
    """The first ``limit`` skips, then one entry counting the rest (for the summary)."""
    out = [list(s) for s in skipped[:limit]]
    if len(skipped) > limit:
        out.append(["...", f"{len(skipped) - limit} more (all listed in the cache's index.json)"])
    return out


def writer_lock(run_dir: str | Path) -> contextlib.AbstractContextManager:
    """``run_dir/.lock`` (:func:`xfit.io.folder_lock`), held while this process trains into the
    run folder, so that a second trainer started on it is refused with one line (two of them
    would interleave their logs and overwrite each other's state). Under torchrun only rank 0
    writes the folder and holds it (``RANK`` is read before the process group exists)."""
    from .io import folder_lock

    try:
        rank = int(os.environ.get("RANK") or 0)
    except ValueError:
        rank = 0
    return folder_lock(run_dir) if rank == 0 else contextlib.nullcontext()


def prune_empty(run_dir: Path, remove_dir: bool) -> None:
    """Remove the empty folders of a run folder, then (``remove_dir``) the run folder if that
    leaves it empty."""
    if not run_dir.is_dir():
        return
    for sub in ("cache", "samples", "snapshots"):
        try:
            (run_dir / sub).rmdir()
        except OSError:
            pass
    if remove_dir:
        try:
            run_dir.rmdir()
        except OSError:
            pass
