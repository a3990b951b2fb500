"""The shape of the package (docs/design.md): layers whose imports point only down, written
at module top, no import circle, no private name reached across packages, no write to
os.environ in library code, and `import pegu` (and the CLI's) without torch.

The checker reads the source (Python's ast), so it sees every import, including those in
branches that a run does not take. It is tried on a small package with one of each fault,
so that this test is known to fail when the shape breaks."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "pegu"
# each subpackage's layer, bottom to top (docs/design.md); upscale and generate share one
LAYERS = {"core": 1, "sources": 2, "upscale": 3, "generate": 3, "pipeline": 4, "lab": 5,
          "cli": 6}


def _modules(root: Path) -> dict[str, Path]:
    """{dotted name: file} of every module under ``root`` (a package folder)."""
    out = {}
    for f in sorted(root.rglob("*.py")):
        parts = list(f.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = f
    return out


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module an ``from X import`` names (relative imports resolved)."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, path: Path, known: dict[str, Path]):
    """(target module, imported name or None, line, at module top?) for each import of a
    module of this package."""
    top = known and next(iter(known)).split(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    at_top = {id(n) for n in tree.body}
    for n in tree.body:  # imports under `if TYPE_CHECKING:` / try: at top count as top
        if isinstance(n, (ast.If, ast.Try)):
            at_top |= {id(m) for m in ast.walk(n)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == top:
                    yield alias.name, None, node.lineno, id(node) in at_top
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, path.name == "__init__.py", node)
            if base.split(".")[0] != top:
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                target, name = (sub, None) if sub in known else (base, alias.name)
                yield target, name, node.lineno, id(node) in at_top


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _environ_writes(path: Path) -> list[int]:
    """Lines that write os.environ (assignment, deletion, update/setdefault/pop/clear,
    putenv/unsetenv)."""
    tree = ast.parse(path.read_text(), str(path))

    def is_environ(node) -> bool:
        return isinstance(node, ast.Attribute) and node.attr == "environ" and \
            isinstance(node.value, ast.Name) and node.value.id == "os"

    lines = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
            targets = getattr(node, "targets", None) or [node.target]
        if any(isinstance(t, ast.Subscript) and is_environ(t.value) for t in targets):
            lines.append(node.lineno)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            f = node.func
            if is_environ(f.value) and f.attr in ("update", "setdefault", "pop", "clear",
                                                   "popitem", "__setitem__"):
                lines.append(node.lineno)
            if isinstance(f.value, ast.Name) and f.value.id == "os" and \
                    f.attr in ("putenv", "unsetenv"):
                lines.append(node.lineno)
    return lines


def problems(root: Path, layers: dict[str, int]) -> list[str]:
    """Every breach of the shape under package folder ``root``, one line each."""
    known = _modules(root)
    out, graph = [], {m: set() for m in known}
    for module, path in known.items():
        own = _package(module)
        for target, name, line, at_top in _imports(module, path, known):
            where = f"{path.relative_to(root.parent)}:{line}"
            if not at_top:
                out.append(f"{where}: imports {target} inside a function (imports of the "
                           "package's own modules go at module top)")
                continue
            graph[module].add(target)
            theirs = _package(target)
            if own and theirs and own != theirs and \
                    layers.get(theirs, 0) >= layers.get(own, 0):
                out.append(f"{where}: {own} (layer {layers.get(own)}) imports {target} "
                           f"(layer {layers.get(theirs)}): imports point down only")
            if name and name.startswith("_") and not name.endswith("__") and own != theirs:
                out.append(f"{where}: imports the private name {name} from another "
                           f"package ({target})")
        out += [f"{path.relative_to(root.parent)}:{line}: writes os.environ (pass the "
                "setting down instead)" for line in _environ_writes(path)]
    out += [f"import circle: {' -> '.join(c)}" for c in _circles(graph)]
    return out


def _circles(graph: dict[str, set]) -> list[list[str]]:
    """The import circles of a module graph (one per strongly connected part; Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1 or v in graph.get(v, ()):
                found.append(sorted(part))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_pegu_keeps_its_shape():
    assert problems(ROOT, LAYERS) == []
    # and the map covers every subpackage there is
    assert {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()} == set(LAYERS)


def test_the_checker_finds_each_breach(tmp_path):
    pkg = tmp_path / "toy"
    files = {
        "__init__.py": "",
        "low/__init__.py": "",
        "low/a.py": "from ..high.b import thing\n",  # upward
        "low/c.py": "import os\nos.environ['X'] = '1'\nos.environ.setdefault('Y', '2')\n",
        "low/d.py": "from .e import x\n",  # d <-> e: a circle
        "low/e.py": "from .d import y\n",
        "high/__init__.py": "",
        "high/b.py": ("thing = 1\n"
                      "def f():\n    from ..low import a\n"  # inner
                      "from ..low.c import _secret\n"),  # private, across packages
    }
    for name, text in files.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(text)
    found = "\n".join(problems(pkg, {"low": 1, "high": 2}))
    assert "toy/low/a.py:1: low (layer 1) imports toy.high.b (layer 2)" in found
    assert found.count("toy/low/c.py") == 2 and "writes os.environ" in found
    assert "import circle: toy.low.d -> toy.low.e" in found
    assert "toy/high/b.py:3: imports toy.low.a inside a function" in found
    assert "private name _secret" in found


@pytest.mark.parametrize("module", ["pegu", "pegu.cli", "pegu.pipeline", "pegu.lab.sweep"])
def test_importing_pegu_stays_light(module):
    """No torch, diffusers or transformers at import: `pegu --help` and the Kaggle setup
    cell (which runs before torch may be replaced) import pegu.cli."""
    code = (f"import sys, {module}; heavy = [m for m in ('torch', 'diffusers', "
            "'transformers', 'basicsr', 'spandrel') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]", f"import {module} loads {out}"
