"""``import xfit``, ``xfit --help`` and every subcommand's ``--help`` load no torch and no numpy
(issue 27: the CLI answered ``--help`` in 3 s and a Ctrl-C during its imports printed a
traceback). Each check runs in a fresh interpreter, since this test process has torch loaded."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "numpy", "scipy")

PROBE = """
import sys
{body}
heavy = [m for m in {heavy!r} if m in sys.modules]
print("HEAVY:" + ",".join(heavy))
"""


def _heavy_after(body: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(body=body, heavy=HEAVY)], capture_output=True, text=True, check=True
    ).stdout
    line = [ln for ln in out.splitlines() if ln.startswith("HEAVY:")][-1]
    return [m for m in line[len("HEAVY:") :].split(",") if m]


def test_import_xfit_is_light_and_names_still_resolve():
    assert _heavy_after("import xfit, xfit.cli") == []
    assert "torch" in _heavy_after("import xfit\nassert xfit.View.__name__ == 'View' and callable(xfit.reconstruct)")


def test_reconstruct_is_the_function_even_after_its_module_is_imported():
    body = (
        "import xfit.reconstruct, xfit\n"
        "assert callable(xfit.reconstruct) and xfit.reconstruct.__name__ == 'reconstruct', xfit.reconstruct\n"
        "from xfit import reconstruct\nassert reconstruct is xfit.reconstruct"
    )
    assert "torch" in _heavy_after(body)


def test_unknown_attribute_is_an_attribute_error():
    import xfit

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        xfit.nope  # noqa: B018


def _commands() -> list[list[str]]:
    from xfit.cli import main

    cmds = [[name] for name in main.commands]
    cmds += [["study", sub] for sub in main.commands["study"].commands]
    return cmds


@pytest.mark.parametrize("argv", [[], *_commands()], ids=lambda a: " ".join(a) or "xfit")
def test_help_loads_no_heavy_module(argv):
    body = (
        "from xfit.cli import main\n"
        f"try:\n    main({[*argv, '--help']!r})\n"
        "except SystemExit as e:\n    assert e.code in (0, None), e.code"
    )
    assert _heavy_after(body) == []
