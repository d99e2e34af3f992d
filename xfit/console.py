"""The command-line contract every xfit command shares (``xfit`` and its subcommands, and the
``python -m`` entry points the trainers keep for torchrun): one line ``xfit: error: ...`` on
stderr and exit code 2 for every user error, never a traceback; warnings as ``xfit: warning:
...``; Ctrl-C and SIGTERM exit 130; and the option types that check numbers (finite, in range).

It sits below the commands (:mod:`xfit.cli` and the entry points of :mod:`xfit.prior.train`,
:mod:`xfit.baselines.train`) and imports none of them.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import click

from .allocator import keep_freed_memory
from .errors import XfitError

#: Seeds of every command lie in [0, SEED_MAX] (numpy and torch accept them all).
SEED_MAX = 2**32 - 1


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (whitespace collapsed; its type name when empty)."""
    msg = (getattr(exc, "format_message", None) or (lambda: str(exc)))() or type(exc).__name__
    return " ".join(msg.split())


def os_error_line(exc: OSError) -> str:
    """``path: reason`` of an OSError (both paths of a rename), else its message."""
    if isinstance(exc, XfitError) or exc.strerror is None:
        return one_line(exc)
    where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
    return " ".join(f"{where}: {exc.strerror}".split()) if where else " ".join(exc.strerror.split())


_ALLOC_WORDS = (
    "can't allocate memory",
    "not enough memory",
    "defaultcpuallocator",
    "out of memory",
    "array is too big",
    "maximum allowed dimension",
)


def is_allocation_failure(exc: BaseException) -> bool:
    """Whether a RuntimeError or ValueError is an allocation failure (numpy, torch)."""
    return isinstance(exc, (RuntimeError, ValueError)) and any(w in str(exc).lower() for w in _ALLOC_WORDS)


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """``warnings.showwarning`` of xfit's commands: ``xfit: warning: ...`` on one line."""
    click.echo(
        f"xfit: warning: {one_line(message) if isinstance(message, BaseException) else ' '.join(str(message).split())}",
        err=True,
    )


def sigterm_as_interrupt():
    """Turn SIGTERM (``kill``, a batch system's time limit) into KeyboardInterrupt, so output
    folders are cleaned up as on Ctrl-C. Returns the previous handler (None off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError):  # pragma: no cover
        return None


class OneLineErrors:
    """Mixin of a click command or group: every user error ends in one line ``xfit: error: ...``
    and exit code 2; warnings print as ``xfit: warning: ...``; Ctrl-C and SIGTERM exit 130."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):  # type: ignore[override]
        keep_freed_memory()
        previous = sigterm_as_interrupt()
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("always", module=r"xfit(\..*)?$")
                warnings.showwarning = show_warning
                rv = self._main(args, prog_name, complete_var, **extra)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        if isinstance(rv, int) and standalone_mode:
            sys.exit(rv)
        return rv

    def _main(self, args, prog_name, complete_var, **extra):
        def fail(text: str) -> None:
            click.echo(f"xfit: error: {text}", err=True)
            sys.exit(2)

        try:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Exit as exc:  # --help, --version
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("xfit: interrupted", err=True)
            sys.exit(130)
        except click.ClickException as exc:  # bad option or argument
            fail(one_line(exc))
        except XfitError as exc:
            fail(one_line(exc))
        except (MemoryError, torch_oom_errors()) as exc:
            fail(
                "out of memory; try a smaller detector (--detector), fewer --restarts, "
                f"or --device cpu ({one_line(exc)[:120]})"
            )
        except OSError as exc:  # read-only or full file system, permission, symlink loop ...
            fail(os_error_line(exc))
        except OverflowError as exc:
            fail(f"a number is too large ({one_line(exc)[:160]})")
        except (RuntimeError, ValueError) as exc:
            if not is_allocation_failure(exc):
                raise  # a bug in xfit: keep the traceback
            fail(
                "out of memory; try a smaller detector (--detector), fewer samples or --restarts "
                f"({one_line(exc)[:120]})"
            )
        return None


class XfitGroup(OneLineErrors, click.Group):
    """The ``xfit`` group: every user error ends in one line ``xfit: error: ...`` and exit code 2."""


class XfitCommand(OneLineErrors, click.Command):
    """A command run on its own (``python -m xfit.baselines.ship``, ``python -m xfit.prior.train
    snapshot``) under the same error contract as ``xfit``'s subcommands."""


def run_entry_point(body: Callable[[], Any], prog: str) -> None:
    """Run ``body``, the work of a ``python -m`` entry point whose arguments are parsed already
    (torchrun's argparse trainers), under the same error contract."""
    XfitCommand(prog, callback=body).main([], prog_name=prog)


def torch_oom_errors() -> type[BaseException]:
    """The out-of-memory exception type of torch (lazy import keeps ``--help`` fast)."""
    try:
        import torch

        return torch.OutOfMemoryError
    except (ImportError, AttributeError):  # pragma: no cover
        return MemoryError


class FiniteFloat(click.ParamType):
    """A float option that must be finite and within ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``)."""

    name = "float"

    def __init__(self, lo: float = -math.inf, hi: float = math.inf, *, lo_open: bool = False) -> None:
        self.lo, self.hi, self.lo_open = lo, hi, lo_open

    def describe(self) -> str:
        left = "(" if self.lo_open else "["
        return f"a finite number in {left}{self.lo:g}, {self.hi:g}]"

    def convert(self, value: Any, param, ctx) -> float:
        try:
            x = float(value)
        except (TypeError, ValueError, OverflowError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(x):
            self.fail(f"{value!r} is not finite; expected {self.describe()}", param, ctx)
        if not ((x > self.lo if self.lo_open else x >= self.lo) and x <= self.hi):
            self.fail(f"{value!r} is out of range; expected {self.describe()}", param, ctx)
        return x

    def __repr__(self) -> str:
        return f"FiniteFloat({self.lo}, {self.hi})"


SEED = click.IntRange(0, SEED_MAX)


def pair_option(
    text: str | None,
    name: str | Sequence[str],
    cast: Callable = float,
    *,
    lo: float = -math.inf,
    hi: float = math.inf,
    lo_open: bool = False,
) -> tuple | None:
    """Parse ``"128"`` or ``"128,96"`` into a pair (a single value is repeated); numbers must be
    finite and in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``)."""
    if text is None:
        return None
    bad = f"expected a number or a pair like 1,2, got {text!r}"
    try:
        parts = [cast(p.strip()) for p in str(text).split(",")]
    except (ValueError, OverflowError):
        raise click.BadParameter(bad, param_hint=name) from None
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2:
        raise click.BadParameter(bad, param_hint=name)
    for x in parts:
        if not math.isfinite(x) or not ((x > lo if lo_open else x >= lo) and x <= hi):
            left = "(" if lo_open else "["
            raise click.BadParameter(
                f"{text!r}: each value must be a finite number in {left}{lo:g}, {hi:g}]", param_hint=name
            )
    return tuple(parts)
