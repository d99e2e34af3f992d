"""The ``xfit`` command line: parse options, call the library, print, exit codes.

Every user error ends in one line ``xfit: error: ...`` on stderr and exit code 2, never a
traceback: an :class:`xfit.errors.XfitError`, a bad option (floats must be finite and in their
documented range), a device that does not exist, an OSError of the file system (read-only, full,
permission, symlink loop; the path is named), an allocation failure or an overflow. Warnings
print as ``xfit: warning: ...``, one line each. Every command checks its device, inputs and
output folder before any work, and writes its output folder as a whole
(:func:`xfit.io.atomic_folder`).

One module per command group, each holding its commands' options and the checks before any
work (the library does the work):

* :mod:`.data`: ``phantoms``, ``simulate``;
* :mod:`.prior`: ``train-prior``, ``sample``, ``evaluate-prior``, ``snapshot``;
* :mod:`.reconstruct`: ``reconstruct``;
* :mod:`.baselines`: ``train-baseline``, ``ship-baselines``;
* :mod:`.studies`: ``evaluate``, ``study angles|geometry|noise|style|radiographs``, ``merge``,
  ``summarize``, ``results``.

The error contract and the option types shared with the ``python -m`` entry points are in
:mod:`xfit.console`.
"""

from __future__ import annotations

import click

from .. import __version__
from ..console import XfitGroup
from . import baselines, data, prior, reconstruct, studies

__all__ = ["main"]


@click.group(cls=XfitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="xfit")
def main() -> None:
    """xfit: reconstruct a 3D CT volume from two X-rays with a 3D StyleGAN2 anatomical prior."""


for _command in (
    data.phantoms,
    data.simulate,  # data
    prior.train_prior,
    prior.sample,
    prior.evaluate_prior,
    prior.snapshot,  # the prior
    reconstruct.reconstruct,  # fitting
    baselines.train_baseline,  # baselines
    studies.evaluate_cmd,
    studies.study,
    studies.merge_cmd,
    studies.summarize_cmd,  # studies
    studies.results_cmd,
):
    main.add_command(_command)
main.add_command(baselines.ship_baselines, "ship-baselines")
