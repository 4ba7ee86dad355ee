"""Run a callback right after a module is first imported, without importing it (stdlib only).

Used once, in ``ndf_datasets/__init__.py``: the HuggingFace adapter registers its feature
type and dataset names when (and only if) the user imports ``datasets``. The core never
imports the adapter itself; it names it here and the import happens after ``datasets``'s.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from typing import Any

__all__ = ["when_imported"]


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
