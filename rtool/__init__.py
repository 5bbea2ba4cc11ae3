"""rtool: a command-line toolbox for reasoning distillation.

The package is also a library: every module under `rtool/` can be imported without the CLI,
never prints to stdout and never exits the process. Commands live in `rtool.commands`.
"""

import os as _os

__version__ = "0.1.0"

# `commands/` sits beside `rtool/` in a source checkout and is installed as `rtool.commands` (pyproject's
# package-dir). Run from a checkout's root, Python finds this source `rtool/` before the installed one, so point
# the package at the checkout too; an installed copy has no `commands/` beside it and is left as it is.
_checkout_commands = _os.path.join(_os.path.dirname(_os.path.dirname(_os.path.abspath(__file__))), "commands")
if _os.path.isfile(_os.path.join(_checkout_commands, "__init__.py")) and not _os.path.isdir(
        _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "commands")):
    __path__.append(_os.path.dirname(_checkout_commands))  # noqa: F821 - a package's __path__
