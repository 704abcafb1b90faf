"""The Python import graph of the package follows the layers of docs/architecture.md.

Every ``import`` / ``from ... import`` statement of every module (also the ones inside functions)
is read with ``ast``, relative imports resolved against the module's package. A runtime module may
import modules of its own layer or below; it never imports mtcp_loop.tools. argparse appears only
in the CLI package (mtcp_loop/tools/cli/).
"""
from __future__ import annotations

import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PKG = os.path.join(ROOT, "mtcp_loop")

# bottom to top: a module imports its own layer and the layers below (docs/architecture.md)
LAYERS = [
    ("native binding", {"_native", "_mtcp_cffi", "_build"}),
    ("links", {"links"}),
    ("config", {"config"}),
    ("engine driver and transports", {"transports", "socks", "faults", "_aio"}),
    ("ops", {"ops", "metrics"}),
    ("loop", {"loop", "vtime"}),
    ("workers and policy", {"workers", "program", "policy"}),
    ("package API", {"__init__", "pytest_plugin"}),
]
RANK = {m: i for i, (_, mods) in enumerate(LAYERS) for m in mods}


def _modules():
    """{dotted name: path} of every .py under mtcp_loop/."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(PKG):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for f in filenames:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, f), ROOT)[:-3].split(os.sep)
                if rel[-1] == "__init__":
                    rel = rel[:-1]
                out[".".join(rel)] = os.path.join(dirpath, f)
    return out


MODULES = _modules()


def imports_of(name: str, path: str) -> list:
    """[(line, imported dotted name)] of one module, relative imports resolved. For
    ``from X import a`` X.a when it is a module of the package, else X."""
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    is_pkg = path.endswith("__init__.py")
    package = name if is_pkg else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[:len(parts) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            subs = [f"{mod}.{a.name}" for a in node.names
                    if f"{mod}.{a.name}" in MODULES or f"{mod}.{a.name}" == "mtcp_loop._mtcp_cffi"]
            # `from pkg import sub` imports the submodule; `from pkg import name` the package itself
            out += [(node.lineno, t) for t in subs] if subs else [(node.lineno, mod)]
    return out


def _layer_of(dotted: str):
    """Runtime layer rank of a mtcp_loop module (None for tools and outside modules)."""
    parts = dotted.split(".")
    if parts[0] != "mtcp_loop" or (len(parts) > 1 and parts[1] == "tools"):
        return None
    return RANK[parts[1] if len(parts) > 1 else "__init__"]


RUNTIME = sorted(n for n in MODULES if not (n == "mtcp_loop.tools" or n.startswith("mtcp_loop.tools.")))


def test_every_runtime_module_has_a_layer():
    missing = [n for n in RUNTIME if (n.split(".")[1] if "." in n else "__init__") not in RANK]
    assert not missing, f"runtime module(s) without a layer in LAYERS (docs/architecture.md): {missing}"


@pytest.mark.parametrize("name", RUNTIME)
def test_runtime_imports_point_down(name):
    mine = _layer_of(name)
    bad = []
    for line, target in imports_of(name, MODULES[name]):
        if target == "mtcp_loop.tools" or target.startswith("mtcp_loop.tools."):
            bad.append(f"line {line}: imports the tools package ({target})")
            continue
        if not target.startswith("mtcp_loop"):
            continue
        theirs = _layer_of(target)
        if theirs is not None and theirs > mine:
            bad.append(f"line {line}: {target} is in layer '{LAYERS[theirs][0]}', above "
                       f"'{LAYERS[mine][0]}'")
    assert not bad, f"{name}:\n  " + "\n  ".join(bad)


def test_argparse_only_in_the_cli_package():
    users = sorted(n for n, p in MODULES.items()
                   if any(t == "argparse" for _, t in imports_of(n, p)))
    assert users and all(n == "mtcp_loop.tools.cli" or n.startswith("mtcp_loop.tools.cli.") for n in users), users


def test_the_checker_sees_an_upward_import(tmp_path):
    """The parser resolves relative imports inside functions: a planted upward import is found."""
    p = tmp_path / "links.py"
    p.write_text("def f():\n    from . import workers\n    from .tools import cli\n")
    found = [t for _, t in imports_of("mtcp_loop.links", str(p))]
    assert "mtcp_loop.workers" in found and "mtcp_loop.tools.cli" in found
    assert _layer_of("mtcp_loop.workers") > _layer_of("mtcp_loop.links")


COMPILED = {"mtcp_loop._mtcp_cffi", "mtcp_loop._aio.core"}     # built extensions, not .py files


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_package_import_names_a_module(name):
    """A relative import moved with its module (e.g. into mtcp_loop/tools/) still names a module
    of the package: caught here, not when the command runs."""
    bad = [f"line {line}: {t}" for line, t in imports_of(name, MODULES[name])
           if t.startswith("mtcp_loop") and t not in MODULES and t not in COMPILED]
    assert not bad, f"{name}: no such module:\n  " + "\n  ".join(bad)
