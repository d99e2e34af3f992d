"""The ``xfit`` command line: parse options, call the library, print, exit codes.

Every user error (an :class:`xfit.errors.XfitError`, a missing file, ...) ends in a one-line
``xfit: error: ...`` message and exit code 2, never a traceback.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

import click

from . import __version__
from .errors import XfitError


class XfitGroup(click.Group):
    """Click group that turns library errors into one-line messages and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (XfitError, FileNotFoundError, IsADirectoryError, PermissionError) as exc:
            msg = str(exc) or type(exc).__name__
            click.echo(f"xfit: error: {msg.splitlines()[0] if msg else msg}", err=True)
            ctx.exit(2)
        except MemoryError:
            click.echo(
                "xfit: error: out of memory; try a smaller detector, fewer restarts or --device cpu",
                err=True,
            )
            ctx.exit(2)


@click.group(cls=XfitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="xfit")
def main() -> None:
    """xfit: reconstruct a 3D CT volume from two X-rays with a 3D StyleGAN2 anatomical prior."""


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
