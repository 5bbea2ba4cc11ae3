"""The house is a stack: a module of rtool/ imports its own folder and the layers below it, never one above or a
sibling beside it, and no command imports another command; inside a folder, imports point one way (no cycle: what two
modules both need moves into a third). Imports inside functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Lowest first. One set is one layer; two folders in one layer are siblings and import neither each other.
LAYERS = [
    {"rtool"},                            # the base: errors, log, config, options, atomic, tiny (rtool/*.py)
    {"rtool.io"},                         # rows, tensors, checkpoints in and out
    {"rtool.grade"},                      # fields, answers, verifier, metrics
    {"rtool.generate"},                   # the generation interface, backends/, sampler, traces (graded)
    {"rtool.curate"},                     # the data stage: decontaminate, difficulty, select
    {"rtool.prm", "rtool.merge"},         # PRM scoring and step labels, best-of-N | merge-bai
    {"rtool.train"},                      # the shared trainer core, one module per objective (grpo uses the PRM)
    {"rtool.commands"},                   # thin flag wiring, one module per subcommand
    {"rtool.cli"},                        # the CLI face: the typer app over every command
    {"rtool.completions"},                # shell completions, generated from the app
]
LAYER = {group: rank for rank, groups in enumerate(LAYERS) for group in groups}


def modules(root: Path) -> dict[str, Path]:
    """Every module's dotted name -> its file: rtool/**.py, and commands/*.py as rtool.commands."""
    found = {}
    for base, prefix in ((root / "rtool", "rtool"), (root / "commands", "rtool.commands")):
        for path in sorted(base.rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([prefix, *parts])] = path
    return found


def group_of(module: str) -> str:
    """The folder (or face module) a module belongs to: rtool.train.core -> rtool.train, rtool.errors -> rtool."""
    parts = module.split(".")
    if module in LAYER:
        return module
    if len(parts) >= 2 and ".".join(parts[:2]) in LAYER:
        return ".".join(parts[:2])
    if len(parts) == 2:  # a module of the base
        return "rtool"
    return ".".join(parts[:2])  # a new folder: not in LAYERS, reported


def imports_of(module: str, path: Path, known: set[str]) -> list[tuple[int, str]]:
    """(line, dotted module) for every rtool module `module` imports; `from a import b` is a.b when that's a module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.append((node.lineno, full if full in known else base))
    return [(line, name) for line, name in found if name == "rtool" or name.startswith("rtool.")]


def layout_problems(root: Path = ROOT) -> list[str]:
    mods = modules(root)
    problems = []
    for module, path in mods.items():
        group = group_of(module)
        where = path.relative_to(root)
        if group not in LAYER:
            problems.append(f"{where}: folder {group} is not in tests/test_layout.py's LAYERS: give it a layer")
            continue
        for line, target in imports_of(module, path, set(mods)):
            if target == "rtool":
                continue  # the package itself: __version__
            to = group_of(target)
            if to == group:
                if group == "rtool.commands" and target != "rtool.commands" and module != "rtool.commands":
                    problems.append(f"{where}:{line}: imports {target}: a command never imports another "
                                    "(move what both need into the core)")
                continue
            if to not in LAYER:
                problems.append(f"{where}:{line}: imports {target}, in no layer of LAYERS")
            elif LAYER[to] > LAYER[group]:
                problems.append(f"{where}:{line}: imports {target}: upward ({group} is below {to})")
            elif LAYER[to] == LAYER[group]:
                problems.append(f"{where}:{line}: imports {target}: sideways ({group} and {to} are siblings)")
    return problems


def import_cycles(root: Path = ROOT) -> list[str]:
    """Each cycle of imports between modules of one folder (`a -> b -> a`), however deep in a function the import is:
    one printed per group of modules that reach each other (Tarjan's strongly connected components)."""
    mods = modules(root)
    graph = {module: sorted({target for _, target in imports_of(module, path, set(mods))
                             if target in mods and target != module and group_of(target) == group_of(module)})
             for module, path in mods.items()}
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(module: str) -> None:
        order[module] = low[module] = len(order)
        stack.append(module)
        for target in graph[module]:
            if target not in order:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], order[target])
        if low[module] == order[module]:
            group = []
            while not group or group[-1] != module:
                group.append(stack.pop())
            if len(group) > 1:
                cycles.append(_cycle_path(sorted(group), graph))

    for module in sorted(graph):
        if module not in order:
            visit(module)
    return cycles


def _cycle_path(group: list[str], graph: dict[str, list[str]]) -> str:
    """`a -> b -> a`: a cycle through the first module of `group`, following imports inside the group."""
    path = [group[0]]
    while True:
        step = next(target for target in graph[path[-1]] if target in group)
        if step in path:
            return " -> ".join(path[path.index(step):] + [step])
        path.append(step)


def test_every_import_points_down_the_stack():
    assert layout_problems() == []


def test_no_import_cycle_inside_a_folder():
    """rtool.io.records read rows through rtool.io.sources, which imported Row back from records: Row and ReadStats
    now live in rtool.io.rows, which both import."""
    assert import_cycles() == []


def test_every_folder_says_what_lives_there():
    """Each stage's folder opens with a 2-5 line docstring: what lives here, what it may import, its entry points."""
    folders = sorted((ROOT / "rtool").glob("*/__init__.py"))
    assert folders
    for init in folders:
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        assert doc and 2 <= len(doc.splitlines()) <= 5, init.relative_to(ROOT)
    assert {group_of(m) for m in modules(ROOT)} <= set(LAYER), "a folder without a layer"


def test_an_upward_sideways_or_command_import_is_caught(tmp_path):
    """The checker itself, on a small tree: each kind of wrong import is reported, the right ones are not."""
    files = {
        "rtool/__init__.py": "",
        "rtool/errors.py": "",
        "rtool/io/__init__.py": "",
        "rtool/io/records.py": "from rtool.errors import x\nfrom rtool import errors\n",
        "rtool/grade/__init__.py": "",
        "rtool/grade/answers.py": "def f():\n    from rtool.train.core import y\n",  # upward, inside a function
        "rtool/prm/__init__.py": "from .bon import z\n",
        "rtool/prm/bon.py": "import rtool.merge.bai\n",  # sideways
        "rtool/merge/__init__.py": "",
        "rtool/merge/bai.py": "from rtool.io import records\n",
        "rtool/train/__init__.py": "",
        "rtool/train/core.py": "from rtool.prm import bon\nfrom ..grade import answers\n",
        "rtool/cli.py": "from rtool.commands import a, b\n",
        "commands/__init__.py": "",
        "commands/a.py": "from rtool.train.core import y\n",
        "commands/b.py": "from rtool.commands.a import f\n",  # a command importing a command
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert layout_problems(tmp_path) == [
        "rtool/grade/answers.py:2: imports rtool.train.core: upward (rtool.grade is below rtool.train)",
        "rtool/prm/bon.py:1: imports rtool.merge.bai: sideways (rtool.prm and rtool.merge are siblings)",
        "commands/b.py:1: imports rtool.commands.a: a command never imports another "
        "(move what both need into the core)",
    ]


def test_an_import_cycle_is_caught_even_inside_a_function(tmp_path):
    files = {
        "rtool/__init__.py": "",
        "rtool/io/__init__.py": "",
        "rtool/io/records.py": "def read():\n    from rtool.io import sources\n",
        "rtool/io/sources.py": "from rtool.io.rows import Row\ndef rows():\n    from rtool.io.records import read\n",
        "rtool/io/rows.py": "",
        "commands/__init__.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert import_cycles(tmp_path) == ["rtool.io.records -> rtool.io.sources -> rtool.io.records"]
    (tmp_path / "rtool/io/sources.py").write_text("from rtool.io.rows import Row\n")
    assert import_cycles(tmp_path) == []


def test_every_package_folder_is_installed():
    """pyproject lists its packages by name (commands/ is mapped to rtool.commands), so a new folder of rtool/ that
    is not listed is missing from a plain `pip install .` while an editable install still finds it."""
    import re

    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    listed = set(re.findall(r'"(rtool(?:\.[a-z_0-9]+)*)"', text.split("[tool.setuptools]")[1].split("package-dir")[0]))
    folders = {".".join(("rtool", *path.parent.relative_to(ROOT / "rtool").parts)).rstrip(".")
               for path in (ROOT / "rtool").rglob("__init__.py")}
    assert folders - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert "rtool.commands" in listed
