"""A package's public names, imported on first use (a module ``__getattr__``, PEP 562), so that
importing the package stays cheap. `onnxedge.runtime` and `onnxedge.export` both use it."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(
    package: str, api: Mapping[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``, whose public names ``api`` maps to the
    module that defines each (``"module:attribute"`` where the attribute is named otherwise).
    A name is imported once, then kept in ``namespace`` (the package's globals) as a plain
    attribute."""

    def __getattr__(name: str) -> Any:
        where = api.get(name)
        if where is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attribute = where.partition(":")
        value = getattr(importlib.import_module(module), attribute or name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *api})

    return __getattr__, __dir__
