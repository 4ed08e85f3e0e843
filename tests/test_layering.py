"""Layering of compiler/ (core), passes/ (plug-ins) and targets/ (hardware, TVM), by their imports.

The layers, bottom up: ``compiler`` (IR, ops, pass infrastructure, interpreter) <- ``passes``
(graph rewrites) and ``targets`` (build and run).  The scan reads every module's imports with
`ast` (nothing is imported) and fails on:

- an upward import: ``compiler`` -> ``passes``/``targets``, ``passes`` -> ``targets``;
- a cycle between packages (directories) among module-level imports;
- a private name (``_x``) or private module imported from another package (directory);
- TVM imported outside ``targets/tvm/``, torch outside ``compiler/torch/``.

Built-in passes are not imported by the infrastructure: `compiler.pass_manager` lists their
module names in ``BUILTIN_PASS_MODULES`` and imports them by name (importlib) at the first
registry lookup, like entry points.  A registry discovering plug-ins by name is not an upward
import of code (``compiler`` never calls into ``passes``), so it needs no allow-list entry; the
test below checks the list and that it is the only route.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("compiler", "passes", "targets")

# (importing module, imported module): function-local imports of the target *registry* by the
# user-facing front end.  `compiler.compile(target="host")`, `CompiledModel.load` and the CLI
# resolve a target by name through `targets.get_target`, the same plug-in discovery as the pass
# registry; they never import a concrete target (and never targets.tvm).  The CLI's `board`
# command drives the emulated board (targets.board).  Each entry must stay a lazy import.
ALLOWED_UPWARD = {
    ("compiler.api", "targets"),
    ("compiler.artifact", "targets"),
    ("compiler.cli", "targets"),
    ("compiler.cli", "targets.board"),
}


@dataclass(frozen=True)
class Import:
    importer: str        # dotted module name, e.g. "passes.quantization.quantize"
    module: str          # imported module, resolved to an absolute dotted name
    names: tuple[str, ...]
    lazy: bool           # inside a function (runs at call time, not import time)
    where: str           # file:line, for the failure message


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_of(module: str) -> str:
    """The directory a module lives in, as a dotted name (a package is its own)."""
    path = ROOT / Path(*module.split("."))
    return module if path.is_dir() else module.rpartition(".")[0]


def scan() -> list[Import]:
    found = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            name = module_name(path)
            is_pkg = path.name == "__init__.py"
            tree = ast.parse(path.read_text(), str(path))
            lazy_nodes = {id(n) for f in ast.walk(tree)
                          if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                          for n in ast.walk(f)}
            for node in ast.walk(tree):
                where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
                if isinstance(node, ast.Import):
                    for a in node.names:
                        found.append(Import(name, a.name, (), id(node) in lazy_nodes, where))
                elif isinstance(node, ast.ImportFrom):
                    if node.level:
                        base = name.split(".")
                        base = base[:len(base) - node.level + (1 if is_pkg else 0)]
                        mod = ".".join(base + ([node.module] if node.module else []))
                    else:
                        mod = node.module or ""
                    names = tuple(a.name for a in node.names)
                    found.append(Import(name, mod, names, id(node) in lazy_nodes, where))
    return found


IMPORTS = scan()


def top(module: str) -> str:
    return module.split(".")[0]


def test_scan_sees_the_code():
    """The scan must find the imports we know exist, or every other check passes vacuously."""
    assert any(i.importer == "passes.fold_bn" and i.module == "compiler.pass_manager"
               for i in IMPORTS)
    assert any(i.importer == "targets.tvm_target" and i.module.startswith("targets.tvm")
               for i in IMPORTS)


def test_no_upward_imports():
    bad = []
    for i in IMPORTS:
        src, dst = top(i.importer), top(i.module)
        upward = (src == "compiler" and dst in ("passes", "targets")) or \
                 (src == "passes" and dst == "targets")
        if not upward:
            continue
        if (i.importer, i.module) in ALLOWED_UPWARD and i.lazy:
            continue
        bad.append(f"{i.where}: {i.importer} imports {i.module}")
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_core_never_imports_tvm_targets():
    bad = [f"{i.where}: {i.importer} imports {i.module}" for i in IMPORTS
           if top(i.importer) == "compiler" and i.module.startswith(("targets.tvm", "tvm"))]
    assert not bad, "\n".join(bad)


def _find_cycles(edges: dict[str, set[str]]) -> list[str]:
    def reach(start: str) -> list[str] | None:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in sorted(edges.get(node, ())):
                if nxt == start:
                    return path + [nxt]
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, path + [nxt]))
        return None

    return [" -> ".join(c) for c in (reach(p) for p in sorted(edges)) if c]


def _targets_of(i: Import) -> list[str]:
    """Modules an import loads: ``from pkg import sub`` is the submodule ``pkg.sub``."""
    out = []
    for n in i.names or ("",):
        sub = f"{i.module}.{n}" if n else i.module
        path = ROOT / Path(*sub.split("."))
        out.append(sub if (path.with_suffix(".py").exists() or path.is_dir()) else i.module)
    return out


def test_no_cycle_between_top_level_packages():
    """compiler, passes, targets: module-level imports (they run at import time)."""
    edges: dict[str, set[str]] = {}
    for i in IMPORTS:
        if not i.lazy and top(i.module) in PACKAGES and top(i.module) != top(i.importer):
            edges.setdefault(top(i.importer), set()).add(top(i.module))
    cycles = _find_cycles(edges)
    assert not cycles, "import cycles between packages:\n" + "\n".join(cycles)


def test_no_module_level_import_cycle_across_packages():
    """A cycle of module-level imports through modules of two directories (a package's
    ``__init__`` importing its own submodules is not one)."""
    edges: dict[str, set[str]] = {}
    for i in IMPORTS:
        if i.lazy or top(i.module) not in PACKAGES:
            continue
        for dst in _targets_of(i):
            if dst != i.importer and not i.importer.startswith(dst + "."):
                edges.setdefault(i.importer, set()).add(dst)
    # Within one directory, a module importing its siblings' registrations at its end
    # (pruning dependency <-> handlers, tvm lowering <-> lowering_quant) is that package's
    # own business; a cycle through two directories is a layering break.
    cycles = [c for c in _find_cycles(edges)
              if len({package_of(m) for m in c.split(" -> ")}) > 1]
    assert not cycles, "module import cycles across packages:\n" + "\n".join(cycles)


def test_nothing_private_across_packages():
    bad = []
    for i in IMPORTS:
        if top(i.module) not in PACKAGES or package_of(i.importer) == package_of(i.module):
            continue
        private = [n for n in i.names if n.startswith("_") and not n.startswith("__")]
        if any(p.startswith("_") and not p.startswith("__") for p in i.module.split(".")):
            private.append(i.module)
        if private:
            bad.append(f"{i.where}: {i.importer} imports private {', '.join(private)} "
                       f"from {i.module}")
    assert not bad, "\n".join(bad)


# Processes that *are* TVM RPC servers (the emulated board's server, run by the aarch64
# python under qemu with only TVM's runtime; the FPGA simulator's server) import TVM's RPC
# server themselves: they are entry points of their own, not library code.
RPC_SERVER_ENTRY_POINTS = {"targets.board.server_main", "targets.fpga_sim.server"}


@pytest.mark.parametrize("lib, home", [("tvm", "targets.tvm"), ("torch", "compiler.torch")])
def test_heavy_libraries_stay_in_their_subpackage(lib, home):
    bad = [f"{i.where}: {i.importer} imports {i.module}" for i in IMPORTS
           if top(i.module) == lib and not (i.importer == home
                                            or i.importer.startswith(home + "."))
           and not (lib == "tvm" and i.importer in RPC_SERVER_ENTRY_POINTS)]
    assert not bad, f"{lib} imported outside {home}:\n" + "\n".join(bad)


def test_builtin_passes_are_loaded_by_name_only():
    """The infrastructure finds its plug-ins through a list of module names, never an import."""
    from compiler.pass_manager import BUILTIN_PASS_MODULES

    assert BUILTIN_PASS_MODULES == ("passes",)
    assert not [i for i in IMPORTS if i.importer.startswith("compiler")
                and top(i.module) == "passes"]
