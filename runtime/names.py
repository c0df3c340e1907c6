"""File names are data: whatever bytes a name holds, a result row keeps its fields and a JSON
record stays valid UTF-8.

Text rows (tab-separated) carry each field through `escape`, in the manner of GNU ls's
``--quoting-style=escape``: a backslash is ``\\\\``; tab, newline, carriage return, bell,
backspace, form feed and vertical tab are ``\\t \\n \\r \\a \\b \\f \\v``; every other control
character (C0, DEL, C1), the Unicode line and paragraph separators, and every byte that is not
part of valid UTF-8 are ``\\ooo``, three octal digits per byte. Everything else, spaces and
non-ASCII letters included, is itself. `unescape` gives back the name's exact bytes.

JSON records carry the name as a string (`json_name`): the name itself where it is valid UTF-8,
else its escaped form, with ``<key>_bytes``: the raw bytes in base64 (only then).
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterator
from typing import Any

_NAMED = {
    "\\": "\\\\",
    "\t": "\\t",
    "\n": "\\n",
    "\r": "\\r",
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\v": "\\v",
}
_UNNAMED = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\\\\]")
_BYTE = re.compile(rb"[\x80-\xff]")
_ESCAPE = re.compile(r"\\([\\tnrabfv]|[0-7]{3})")
_UNESCAPED = {v[1]: k for k, v in _NAMED.items()}


def name_bytes(name: str | bytes) -> bytes:
    """The bytes of a file name as the system gave it (str names hold undecodable bytes as lone
    surrogates, Python's ``surrogateescape``)."""
    if isinstance(name, bytes):
        return name
    try:
        return os.fsencode(name)
    except UnicodeEncodeError:  # a surrogate no file system gave: kept as its UTF-8 form
        return name.encode("utf-8", "surrogatepass")


def is_utf8(name: str | bytes) -> bool:
    try:
        name_bytes(name).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def escape(name: str | bytes) -> str:
    """``name`` as text that holds no control character and no byte outside valid UTF-8 (the
    module docstring's rules); `unescape` reverses it."""
    return "".join(_escape_text(text) + octal(bad) for text, bad in utf8_runs(name_bytes(name)))


def shown(name: str | bytes) -> str:
    """``name`` for a message: as it is where it is valid UTF-8 without control characters, else
    `escape`d (one line, and bytes shown as predict's lines show them)."""
    if is_utf8(name):
        plain = name_bytes(name).decode("utf-8")
        if not _UNNAMED.search(plain.replace("\\", "")):
            return plain
    return escape(name)


def utf8_runs(raw: bytes) -> Iterator[tuple[str, bytes]]:
    """``raw`` as runs of (valid UTF-8 text, the bytes after it that are not UTF-8, or b"")."""
    while raw:
        try:
            text, raw = raw.decode("utf-8"), b""
        except UnicodeDecodeError as e:
            text = raw[: e.start].decode("utf-8")
            bad, raw = raw[e.start : e.end], raw[e.end :]
            yield text, bad
            continue
        yield text, b""


def octal(data: bytes) -> str:
    """Each byte as ``\\ooo``, as predict's lines show bytes outside UTF-8."""
    return "".join(f"\\{b:03o}" for b in data)


def _escape_text(text: str) -> str:
    return _UNNAMED.sub(
        lambda m: _NAMED.get(m.group()) or octal(m.group().encode()),
        text,
    )


def unescape(text: str) -> bytes:
    """The bytes `escape` was given."""
    out = bytearray()
    pos = 0
    for m in _ESCAPE.finditer(text):
        out += text[pos : m.start()].encode("utf-8")
        code = m.group(1)
        out += _UNESCAPED[code].encode() if len(code) == 1 else bytes([int(code, 8)])
        pos = m.end()
    out += text[pos:].encode("utf-8")
    return bytes(out)


def json_name(name: str | bytes, key: str = "file") -> dict[str, Any]:
    """``{key: name}`` for a JSON record: the name where it is valid UTF-8; else its `escape`d
    form and ``{key}_bytes``, the raw bytes in base64."""
    if is_utf8(name):
        return {key: name_bytes(name).decode("utf-8")}
    return {key: escape(name), f"{key}_bytes": base64.b64encode(name_bytes(name)).decode()}


def text(value: Any) -> str:
    """A value for a JSON record (a message, a label): itself where it is valid UTF-8, else
    `escape`d."""
    s = str(value)
    return s if is_utf8(s) else escape(s)


def json_safe(value: Any) -> Any:
    """``value`` (dicts, lists, tuples, strings, numbers) with every string, keys included, made
    `text`: what `json.dumps` then writes is valid UTF-8."""
    if isinstance(value, str):
        return text(value)
    if isinstance(value, dict):
        return {text(k) if isinstance(k, str) else k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


__all__ = [
    "escape",
    "is_utf8",
    "json_name",
    "json_safe",
    "name_bytes",
    "octal",
    "text",
    "unescape",
    "utf8_runs",
]
