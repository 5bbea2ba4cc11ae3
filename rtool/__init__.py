"""rtool: a command-line toolbox for reasoning distillation.

The package is also a library: every module under `rtool/` can be imported without the CLI,
never prints to stdout and never exits the process. Commands live in `rtool.commands`.
"""

__version__ = "0.1.0"
