"""The user's own model: a factory named ``pkg.module:factory`` or ``path/to/file.py:factory``.

`onnxedge export --model` takes a registered name (``smile_cnn``) or a factory reference; the
factory is called with the ``--model-arg key=value`` pairs as keyword arguments and must return a
``torch.nn.Module``. Each way this can go wrong is one `OnnxEdgeError` line: a reference that is not
``module:factory``, a module that does not import (the exception's first line), a missing
attribute, a factory that raises, a result that is not a module.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import importlib
import importlib.util
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from onnxedge.runtime.errors import OnnxEdgeError, first_line, found_at


def is_factory_reference(model: str) -> bool:
    """Whether ``--model`` names a factory (``module:factory``) rather than a registered model."""
    return ":" in model


def parse_model_args(items: Sequence[str]) -> dict[str, Any]:
    """``["depth=18", "pretrained=False", "name=tiny"]`` -> keyword arguments.

    A value is read as a Python literal (numbers, True/False/None, quoted strings, tuples, lists,
    dicts); anything that is not one (``name=tiny``) is kept as the string it is.
    """
    args: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise OnnxEdgeError(
                f"--model-arg: expected key=value with a Python name, found {item!r}"
            )
        if key in args:
            raise OnnxEdgeError(f"--model-arg: {key!r} given twice")
        try:
            args[key] = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            args[key] = text.strip()
    return args


def load_factory(reference: str) -> Callable[..., Any]:
    """The callable ``reference`` names: ``pkg.module:factory`` or ``path/to/file.py:factory``."""
    module_ref, sep, attr = reference.rpartition(":")
    if not sep or not module_ref or not attr:
        raise OnnxEdgeError(
            f"expected --model as a registered name or as module:factory "
            f"(pkg.module:factory or path/to/file.py:factory), found {reference!r}"
        )
    module = _import_file(module_ref) if module_ref.endswith(".py") else _import(module_ref)
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            found = sorted(
                n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n))
            )
            raise OnnxEdgeError(
                f"{module_ref} has no {attr!r}; it defines: {', '.join(found[:12]) or 'nothing'}"
                + (" …" if len(found) > 12 else "")
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise OnnxEdgeError(f"{reference} is a {type(obj).__name__}, not a callable factory")
    return obj


def build_module(reference: str, args: Mapping[str, Any] | None = None) -> Any:
    """Call the factory with ``args`` and return the ``torch.nn.Module`` it builds."""
    import torch

    factory = load_factory(reference)
    kwargs = dict(args or {})
    try:
        module = factory(**kwargs)
    except Exception as e:
        call = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise OnnxEdgeError(
            f"{reference}({call}) raised {type(e).__name__}{_where(e)}: {first_line(e)}"
        ) from None
    if not isinstance(module, torch.nn.Module):
        raise OnnxEdgeError(
            f"{reference} returned a {type(module).__name__}; expected a torch.nn.Module"
        )
    return module


def _where(e: BaseException) -> str:
    """`` at FILE:LINE`` of the line that raised ``e`` (a bare ``assert`` says nothing else)."""
    import traceback

    frames = traceback.extract_tb(e.__traceback__)
    if not frames or frames[-1].filename == __file__:  # the call itself failed (a wrong argument)
        return ""
    return f" at {frames[-1].filename}:{frames[-1].lineno}"


def _import(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except Exception as e:  # ImportError, or anything the module raises while it loads
        raise OnnxEdgeError(
            f"cannot import {name!r}: {type(e).__name__}: {first_line(e)}"
        ) from None


def _import_file(path_text: str) -> Any:
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise OnnxEdgeError(f"expected a Python file for --model, found {found_at(path)}")
    resolved = path.resolve()
    # One module name per file, so that two user files named model.py do not replace each other.
    # (the path's bytes, any name the system allows; the stem in word characters only)
    digest = hashlib.sha256(os.fsencode(resolved)).hexdigest()[:12]
    stem = re.sub(r"\W", "_", resolved.stem.encode("ascii", "replace").decode("ascii"))
    name = f"onnxedge_user_{stem}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise OnnxEdgeError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up by name
    try:
        with _on_sys_path(resolved.parent):  # the file may import its siblings
            spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise OnnxEdgeError(f"cannot import {path}: {type(e).__name__}: {first_line(e)}") from None
    return module


@contextlib.contextmanager
def _on_sys_path(folder: Path) -> Iterator[None]:
    entry = str(folder)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)
