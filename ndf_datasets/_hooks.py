"""Import-system hooks (stdlib only): a callback after a module's import, and moved module paths.

Both are used in ``ndf_datasets/__init__.py``:

* :func:`when_imported`: the HuggingFace adapter registers its feature type and dataset names
  when (and only if) the user imports ``datasets``. The core never imports the adapter itself;
  it names it here and the import happens after ``datasets``'s.
* :func:`alias_modules`: the module paths of the flat layout (``ndf_datasets.format``,
  ``ndf_datasets.shards`` ...) import the very module object now at the new path
  (``ndf_datasets.codec.format``, ``ndf_datasets.data.shards`` ...), so old imports,
  ``isinstance`` checks and monkeypatching keep working.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from typing import Any

__all__ = ["when_imported", "alias_modules"]


class _AfterImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the real loader of ``name`` so ``target()`` runs after it."""

    def __init__(self, name: str, target: str) -> None:
        self.name, self.target = name, target

    def find_spec(self, fullname: str, path: Any = None, target: Any = None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)  # one shot; lets the other finders answer
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module: Any) -> None:
            exec_module(module)
            _call(self.target)

        spec.loader.exec_module = exec_then_register  # type: ignore[method-assign]
        return spec


def _call(target: str) -> None:
    module_name, _, func = target.partition(":")
    importing = sys.modules.get(module_name)
    if importing is not None and not hasattr(importing, func):
        return  # the target module is being imported right now (it imported `name`); it registers itself
    try:
        getattr(importlib.import_module(module_name), func)()
    except Exception as exc:  # noqa: BLE001 - an optional adapter must never break its host's import
        import warnings

        warnings.warn(f"{target} failed: {exc!r}", RuntimeWarning, stacklevel=2)


def when_imported(name: str, target: str) -> None:
    """Call ``target`` (``"pkg.module:function"``) now if ``name`` is imported, else right after it is."""
    if name in sys.modules:
        _call(target)
    elif importlib.util.find_spec(name) is not None and not any(
        isinstance(f, _AfterImport) and f.name == name for f in sys.meta_path
    ):
        sys.meta_path.insert(0, _AfterImport(name, target))


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old module path (or a submodule of one) and loads it as the module at its new path."""

    def __init__(self, moved: dict[str, str]) -> None:
        self.moved = dict(moved)

    def target(self, fullname: str) -> str | None:
        """The new path of ``fullname``, or ``None`` if it did not move."""
        for old, new in self.moved.items():
            if fullname == old or fullname.startswith(old + "."):
                return new + fullname[len(old) :]
        return None

    def find_spec(self, fullname: str, path: Any = None, target: Any = None):
        if self.target(fullname) is None:
            return None
        return importlib.util.spec_from_loader(fullname, self, is_package=False)

    def create_module(self, spec: Any) -> Any:
        module = importlib.import_module(self.target(spec.name))
        spec.loader_state = module.__spec__  # the import system is about to stamp ``spec`` on it
        return module

    def exec_module(self, module: Any) -> None:
        module.__spec__ = module.__spec__.loader_state  # already executed; give it back its own spec


def alias_modules(moved: dict[str, str]) -> None:
    """Make each old module path in ``moved`` (``{old: new}``, submodules included) import the module at its new path.

    Modules already imported are bound now (``sys.modules`` and, unless the name is taken,
    the parent package's attribute: ``ndf_datasets.decode`` stays the function); the others
    are found on first import by a ``sys.meta_path`` finder.
    """
    for name, module in list(sys.modules.items()):
        for old, new in moved.items():
            if name == new or name.startswith(new + "."):
                _bind(old + name[len(new) :], module)
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.insert(0, _Alias(moved))


def _bind(old: str, module: Any) -> None:
    sys.modules.setdefault(old, module)
    parent, _, child = old.rpartition(".")
    if parent in sys.modules and not hasattr(sys.modules[parent], child):
        setattr(sys.modules[parent], child, module)
