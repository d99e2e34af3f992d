"""``python -m xfit.cli``: the ``xfit`` command."""

from . import main

main()
