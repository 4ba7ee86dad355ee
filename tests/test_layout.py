"""The package layout: the codec, data and integrations rooms, no import cycles, small modules, old paths.

**The import graph.** Every module of the package (``ndf_datasets/`` and ``integrations/``,
which is installed as ``ndf_datasets.integrations``) is parsed with :mod:`ast`. Every
``import`` and ``from ... import`` at any depth (module level, inside functions, under
``if TYPE_CHECKING:``), absolute or relative, that names a module of the package is an edge:

* ``import a.b.c`` is an edge to ``a.b.c``; ``from P import name`` is an edge to ``P.name``
  when that is a module of the package, else to ``P`` (a name of ``P``'s ``__init__``).
* Importing ``a.b.c`` also runs ``a/__init__`` and ``a/b/__init__`` first. These implicit
  parent imports are **not** edges: otherwise every submodule would "import" the package
  that re-exports it, and every ``__init__`` that re-exports its submodules would be a cycle.
* An *explicit* import of one's own package is an edge like any other (``import ndf_datasets``
  or ``from .. import name`` where ``name`` is not a submodule): a submodule that imports its
  package's ``__init__`` while that ``__init__`` imports it is a real cycle and is reported.

The rules checked on that graph: the codec (``ndf_datasets.codec``) imports nothing outside
itself (and, outside the standard library, only numpy, torch, constriction, fsspec, tqdm and
Pillow); ``ndf_datasets.data`` imports only the codec and itself (plus the version module),
never the integrations; modules outside the codec import only its public names; no module
imports an old (moved) module path; and the graph has no cycle. No module is longer than
450 lines, and every module starts with a docstring.

**Old paths.** ``tests/expected/old_module_names.json`` lists the public names (defined at
module level, in ``__all__``, or marked as re-exported) of every module of the flat layout,
generated from commit 9506e50, the last one before the split. Each old module path still
imports, the moved ones as the very same module object as the new path
(``ndf_datasets._MOVED``), and every listed name is there and is the object its defining
module holds.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

import ndf_datasets

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"ndf_datasets": "ndf_datasets", "integrations": "ndf_datasets.integrations"}
MAX_LINES = 450
CODEC = "ndf_datasets.codec"
DATA = "ndf_datasets.data"
INTEGRATIONS = "ndf_datasets.integrations"
CODEC_THIRD_PARTY = {"numpy", "torch", "constriction", "fsspec", "tqdm", "PIL"}
OLD_NAMES = json.loads((ROOT / "tests" / "expected" / "old_module_names.json").read_text())


def _modules() -> dict[str, Path]:
    """Module name -> source file, for every module of the package."""
    out = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


MODULES = _modules()


def _in(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _imports(module: str, path: Path) -> tuple[list[tuple[str, list[str], int]], set[str]]:
    """``(target module, names imported from it, line)`` per internal import, and the external top-level modules."""
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    internal, external = [], set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _in(alias.name, "ndf_datasets"):
                    internal.append((alias.name, [], node.lineno))
                else:
                    external.add(alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            if not _in(base, "ndf_datasets"):
                external.add(base.split(".")[0])
                continue
            names = [a.name for a in node.names]
            submodules = [n for n in names if f"{base}.{n}" in MODULES]
            for n in submodules:
                internal.append((f"{base}.{n}", [], node.lineno))
            others = [n for n in names if n not in submodules]
            if others:
                internal.append((base, others, node.lineno))
    return internal, external


IMPORTS = {m: _imports(m, p) for m, p in MODULES.items()}


def _edges(module: str) -> set[str]:
    return {target for target, _, _ in IMPORTS[module][0]}


def _graph() -> dict[str, set[str]]:
    return {m: {t for t in _edges(m) if t in MODULES and t != m} for m in MODULES}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (as a path that returns to its start), or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


# ----------------------------------------------------------------------------- the graph


def test_the_graph_sees_every_kind_of_import():
    """The parser catches function-level, relative and TYPE_CHECKING imports (the rules rely on it)."""
    handlers = _edges("ndf_datasets.integrations.webdataset.handlers")
    assert {"ndf_datasets.codec", "ndf_datasets.integrations.s3", "ndf_datasets.integrations.webdataset.bases"} <= handlers
    assert "ndf_datasets.integrations.hf.builder" in _edges("ndf_datasets.integrations.hf.registration")  # in a function
    assert "ndf_datasets.codec.io" in _edges("ndf_datasets.codec.shared")
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_codec_imports_nothing_outside_itself():
    bad = {m: sorted(t for t in _edges(m) if not _in(t, CODEC)) for m in MODULES if _in(m, CODEC)}
    bad = {m: t for m, t in bad.items() if t}
    assert not bad, f"codec modules importing from outside ndf_datasets.codec: {bad}"
    allowed = set(sys.stdlib_module_names) | CODEC_THIRD_PARTY | {"__future__"}
    third = {m: sorted(IMPORTS[m][1] - allowed) for m in MODULES if _in(m, CODEC)}
    third = {m: t for m, t in third.items() if t}
    assert not third, f"codec modules importing other third-party packages: {third}"


def test_data_imports_only_the_codec_and_itself():
    allowed = (CODEC, DATA, "ndf_datasets._version")
    bad = {m: sorted(t for t in _edges(m) if not any(_in(t, a) for a in allowed)) for m in MODULES if _in(m, DATA)}
    bad = {m: t for m, t in bad.items() if t}
    assert not bad, f"data modules importing the integrations or the front door: {bad}"


def test_outside_the_codec_only_public_codec_names_are_used():
    bad = []
    for m in MODULES:
        if _in(m, CODEC):
            continue
        for target, names, line in IMPORTS[m][0]:
            if not _in(target, CODEC):
                continue
            private = [p for p in target.split(".") if p.startswith("_")] + [n for n in names if n.startswith("_")]
            if private:
                bad.append(f"{m}:{line} imports {private} from {target}")
    assert not bad, "private codec names used outside the codec:\n" + "\n".join(bad)


def test_the_package_imports_no_old_path():
    bad = [
        f"{m}:{line} imports {target}"
        for m in MODULES
        for target, _, line in IMPORTS[m][0]
        if target not in MODULES
    ]
    assert not bad, "imports of module paths that are not files (old, moved paths?):\n" + "\n".join(bad)


def test_no_module_is_over_450_lines():
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules longer than {MAX_LINES} lines: {long}"


def test_pyproject_lists_every_package():
    """The packages are listed explicitly (integrations/ is mapped to ndf_datasets.integrations): a wheel
    built from a list that misses a new subpackage would install without it."""
    tomllib = pytest.importorskip("tomllib")
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = {m for m, p in MODULES.items() if p.name == "__init__.py"}
    assert listed == packages, f"missing from pyproject.toml: {sorted(packages - listed)}; stale: {sorted(listed - packages)}"


def test_every_module_says_what_it_is_for():
    missing = [m for m, p in MODULES.items() if not (ast.get_docstring(ast.parse(p.read_text(encoding="utf-8"))) or "").strip()]
    assert not missing, f"modules without a docstring: {missing}"


# ----------------------------------------------------------------------------- old paths


def test_moved_modules_are_the_same_objects_under_their_old_paths():
    for old, new in ndf_datasets._MOVED.items():
        pytest.importorskip(new.rsplit(".", 1)[0] if "integrations.hf" in new else new)
        assert importlib.import_module(old) is importlib.import_module(new), old
    from ndf_datasets.fields import conv as old_conv

    from ndf_datasets.codec.fields import conv

    assert old_conv is conv and ndf_datasets.format is importlib.import_module("ndf_datasets.codec.format")
    # as before the split, the package's functions decode and convert win over the old module names
    assert callable(ndf_datasets.decode) and callable(ndf_datasets.convert)
    assert ndf_datasets.decode is importlib.import_module("ndf_datasets.decode").decode


def test_no_module_is_shadowed_by_a_name_of_its_package():
    """``import a.b as m`` gives ``a.b`` the attribute: a door exporting a function ``b`` would hide module ``b``."""
    shadowed = []
    for name in MODULES:
        parent, _, child = name.rpartition(".")
        if parent not in MODULES or ("integrations." in name and importlib.util.find_spec(name) is None):
            continue
        try:
            module = importlib.import_module(name)
        except ImportError:  # an optional extra
            continue
        if getattr(sys.modules[parent], child) is not module:
            shadowed.append(f"{parent}.{child} is {getattr(sys.modules[parent], child)!r}")
    assert not shadowed, "submodules hidden by a name of their package:\n" + "\n".join(shadowed)


@pytest.mark.parametrize("module", sorted(OLD_NAMES))
def test_every_old_public_name_still_imports(module):
    if "integrations." in module:
        pytest.importorskip({"hf": "datasets", "hf_builder": "datasets", "s3": "fsspec"}.get(module.rsplit(".", 1)[1], module.rsplit(".", 1)[1]))
    mod = importlib.import_module(module)
    missing = [n for n in OLD_NAMES[module] if not hasattr(mod, n)]
    assert not missing, f"{module} lost {missing}"
    for name in OLD_NAMES[module]:
        obj = getattr(mod, name)
        home = sys.modules.get(getattr(obj, "__module__", None) or "")
        if home is not None and _in(home.__name__, "ndf_datasets") and hasattr(obj, "__qualname__") and "." not in obj.__qualname__:
            assert getattr(home, obj.__qualname__) is obj, f"{module}.{name} is not {home.__name__}.{obj.__qualname__}"


def test_each_module_is_loaded_once():
    """No file is imported twice under two names (the old names are the same objects, not copies)."""
    for module in OLD_NAMES:
        try:
            importlib.import_module(module)
        except ImportError:  # an optional extra
            pass
    by_file: dict[str, set[str]] = {}
    for name, mod in list(sys.modules.items()):
        if _in(name, "ndf_datasets") and getattr(mod, "__file__", None):
            by_file.setdefault(mod.__file__, set()).add(mod.__name__)
    twice = {f: names for f, names in by_file.items() if len(names) > 1}
    assert not twice, f"files loaded as several modules: {twice}"
    for old, new in ndf_datasets._MOVED.items():
        if old in sys.modules:
            assert sys.modules[old].__spec__.name == new, old


def test_old_paths_work_in_a_fresh_interpreter():
    """From a cold start, in the order a user may write them: old path first, then the new one."""
    code = (
        "from ndf_datasets.fields.grid import GridMLP\n"
        "from ndf_datasets.decode import read_field\n"
        "from ndf_datasets.io import write_atomic, load_base_cached\n"
        "import ndf_datasets.amortised, ndf_datasets as ndf\n"
        "from ndf_datasets.codec.fields.grid import GridMLP as G\n"
        "from ndf_datasets.codec import amortised, decoding, io, bases\n"
        "assert GridMLP is G and ndf_datasets.amortised is amortised and callable(ndf.decode)\n"
        "assert read_field is decoding.read_field and write_atomic is io.write_atomic\n"
        "assert load_base_cached is bases.load_base_cached\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
