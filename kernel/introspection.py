"""Completion, calltips, docs and dir() over a live namespace, using jedi.

Plain functions over a namespace dict, safe to call from a thread while user code
runs in the main thread: jedi.Interpreter does not execute user code (it does read
attributes, so properties run), and each call works on a snapshot of the namespace.
Arguments and results are JSON-like (None, bool, int, float, str, list, dict).
jedi is imported on first use so that the kernel starts fast.
"""

from __future__ import annotations

import builtins
import logging
import threading
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

_jedi_lock = threading.Lock()  # jedi keeps caches that are not thread-safe


def _check(source: Any, line: Any, column: Any) -> None:
    if not isinstance(source, str):
        raise TypeError(f"source must be str, not {type(source).__name__}")
    for name, value in (("line", line), ("column", column)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int)
        ):
            raise TypeError(f"{name} must be int or None, not {type(value).__name__}")


def _position(source: str, line: int | None, column: int | None) -> tuple[int, int]:
    """Clamp a (1-based line, 0-based column) cursor into the source; default: end."""
    lines = source.split("\n")
    if line is None:
        line = len(lines)
    line = min(max(line, 1), len(lines))
    length = len(lines[line - 1])
    column = length if column is None else min(max(column, 0), length)
    return line, column


def _script(source: str, namespace: Mapping[str, Any]) -> Any:
    import jedi

    # dict(...) of a dict copies in C, atomically with respect to other threads.
    return jedi.Interpreter(source, [dict(namespace)])


def complete(
    namespace: Mapping[str, Any],
    source: str,
    line: int | None = None,
    column: int | None = None,
) -> dict[str, Any]:
    """Completions at the cursor: the names and how much to replace.

    Returns ``{"names": [...], "prefix_length": n}``: replacing the ``n`` characters
    before the cursor with a name completes it. (No types: jedi infers each one,
    which would double the cost of a completion.)
    """
    _check(source, line, column)
    line, column = _position(source, line, column)
    try:
        with _jedi_lock:
            found = _script(source, namespace).complete(line, column)
            names = [c.name for c in found]
            prefix = found[0].get_completion_prefix_length() if found else 0
    except Exception:
        log.warning("completion failed", exc_info=True)
        return {"names": [], "prefix_length": 0}
    return {"names": names, "prefix_length": prefix}


def signature(
    namespace: Mapping[str, Any],
    source: str,
    line: int | None = None,
    column: int | None = None,
) -> dict[str, Any] | None:
    """Calltip for the call the cursor is in, or None outside a call.

    Returns ``{"name": str, "signatures": [str, ...], "index": int | None}``;
    ``index`` is the parameter the cursor is at (None if past the last one).
    """
    _check(source, line, column)
    line, column = _position(source, line, column)
    try:
        with _jedi_lock:
            found = _script(source, namespace).get_signatures(line, column)
            if not found:
                return None
            return {
                "name": found[0].name,
                "signatures": [s.to_string() for s in found],
                "index": found[0].index,
            }
    except Exception:
        log.warning("signature failed", exc_info=True)
        return None


def doc(
    namespace: Mapping[str, Any],
    source: str,
    line: int | None = None,
    column: int | None = None,
) -> dict[str, Any] | None:
    """Documentation of the name at the cursor (default: the end of ``source``).

    Returns ``{"name": str, "full_name": str | None, "type": str, "doc": str}``
    (``doc`` starts with the signature for callables), or None if nothing is known.
    """
    _check(source, line, column)
    line, column = _position(source, line, column)
    try:
        with _jedi_lock:
            script = _script(source, namespace)
            found = script.infer(line, column) or script.help(line, column)
            if not found:
                return None
            name = found[0]
            return {
                "name": name.name,
                "full_name": name.full_name,
                "type": name.type,
                "doc": name.docstring(),
            }
    except Exception:
        log.warning("doc failed", exc_info=True)
        return None


def dir_(namespace: Mapping[str, Any], expr: str) -> list[str]:
    """The attribute names of ``expr``, like ``dir(expr)``, without running user code.

    A dotted name (``os.path``) is looked up in the live namespace with getattr (so
    properties run, nothing else); any other expression is analysed by jedi. Unknown
    names give an empty list; an empty ``expr`` lists the namespace.
    """
    if not isinstance(expr, str):
        raise TypeError(f"expr must be str, not {type(expr).__name__}")
    expr = expr.strip()
    if not expr:
        return sorted(namespace)
    parts = expr.split(".")
    if not all(part.isidentifier() for part in parts):
        return sorted(complete(namespace, f"({expr}).")["names"])
    missing = object()
    obj = dict(namespace).get(parts[0], missing)
    if obj is missing:
        obj = getattr(builtins, parts[0], missing)
    try:
        for part in parts[1:]:
            if obj is missing:
                break
            obj = getattr(obj, part, missing)
        return [] if obj is missing else sorted(str(name) for name in dir(obj))
    except Exception:
        log.warning("dir(%r) failed", expr, exc_info=True)
        return []
