"""Lazy package attributes (PEP 562): a package names its public objects and the modules that
define them; each module is imported on first access. Importing the package itself then
costs nothing, which keeps ``squeezenet --help`` and the PyTorch-free parts free of torch."""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """-> (``__getattr__``, ``__dir__``) for ``package``, whose ``exports`` maps name -> module."""
    namespace = importlib.import_module(package).__dict__

    def __getattr__(name: str) -> object:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        namespace[name] = value  # cached: the next access is a plain attribute
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *exports})

    return __getattr__, __dir__
