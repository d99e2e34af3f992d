"""Exceptions raised by the xfit library.

Library code raises these (never ``sys.exit``); only :mod:`xfit.cli` turns them into a one-line
message and exit code 2.
"""


class XfitError(Exception):
    """Base class of every error that is the user's input rather than a bug in xfit."""


class InputError(XfitError, ValueError):
    """A file, image or volume that cannot be used (missing, unreadable, wrong shape, NaN...)."""


class GeometryError(XfitError, ValueError):
    """An impossible or inconsistent view geometry (negative distances, sod >= sdd, ...)."""


class CheckpointError(XfitError, ValueError):
    """A prior or training checkpoint that is corrupt, foreign or of an unknown format."""


class OutputExistsError(XfitError, FileExistsError):
    """An output path exists already and ``force`` was not given."""


class OutputError(XfitError, OSError):
    """An output path that cannot be written: its parent is a file, it is read-only, full, a
    dangling symlink or a symlink loop, or it would replace the inputs or the current folder."""
