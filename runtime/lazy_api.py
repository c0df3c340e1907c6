"""A package's public names, imported on first use (a module ``__getattr__``, PEP 562), so that
importing the package stays cheap. `onnxedge.runtime` and `onnxedge.export` both use it."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(
    package: str, api: Mapping[str, str], namespace: dict[str, Any], *, install: str | None = None
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``, whose public names ``api`` maps to the
    module that defines each (``"module:attribute"`` where the attribute is named otherwise).
    A name is imported once, then kept in ``namespace`` (the package's globals) as a plain
    attribute. Where a module of another package that a name needs is missing, the
    ``ModuleNotFoundError`` names the public name too, and ``install`` (how to install what the
    package needs) where given."""

    def __getattr__(name: str) -> Any:
        where = api.get(name)
        if where is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attribute = where.partition(":")
        try:
            loaded = importlib.import_module(module)
        except ModuleNotFoundError as e:
            missing = (e.name or "").partition(".")[0]
            if not missing or missing == "onnxedge":
                raise
            how = f"; install with: {install}" if install else ""
            raise ModuleNotFoundError(
                f"{package}.{name} needs {missing}, not installed here{how}", name=e.name
            ) from e
        value = getattr(loaded, attribute or name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *api})

    return __getattr__, __dir__
