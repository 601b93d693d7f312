"""Connection files: where a broker listens and the key that lets a client in.

A connection file is a small JSON object, readable only by its owner (mode 0600)
and written atomically (a temporary file renamed into place), so a reader never
sees half a file. Pure functions over paths and dicts; nothing here opens a socket.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

#: Directory below $XDG_RUNTIME_DIR (or the fallback) where brokers write their files.
RUNTIME_SUBDIR = "yoton"
#: Fallback runtime directory when $XDG_RUNTIME_DIR is not set.
FALLBACK_RUNTIME_DIR = Path("~/.local/share/yoton/runtime")


def runtime_dir(environ: dict[str, str] | None = None) -> Path:
    """Return the connection file directory ($XDG_RUNTIME_DIR/yoton or fallback)."""
    environ = os.environ if environ is None else environ
    xdg = environ.get("XDG_RUNTIME_DIR", "")
    if xdg:
        return Path(xdg) / RUNTIME_SUBDIR
    return FALLBACK_RUNTIME_DIR.expanduser()


def default_connection_file(
    pid: int | None = None, environ: dict[str, str] | None = None
) -> Path:
    """Return the default connection file path: <runtime dir>/broker-<pid>.json."""
    pid = os.getpid() if pid is None else pid
    return runtime_dir(environ) / f"broker-{pid}.json"


def connection_info(
    address: str, key: str | None, pid: int, **extra: Any
) -> dict[str, Any]:
    """Return the JSON object of a connection file (``key`` None: no key needed)."""
    info: dict[str, Any] = {"address": address, "key": key, "pid": pid}
    info.update(extra)
    return info


def write_connection_file(path: str | os.PathLike[str], info: dict[str, Any]) -> Path:
    """Write ``info`` as JSON to ``path`` atomically with mode 0600; return the path.

    Missing parent directories are created with mode 0700.
    """
    target = Path(path)
    parent = target.parent
    if not parent.is_dir():
        parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = parent / f".{target.name}.{os.getpid()}.tmp"
    text = json.dumps(info, indent=1, sort_keys=True) + "\n"
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to an existing file
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            fd = -1
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    return target


def read_connection_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a connection file; raise ValueError if it is not one."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not isinstance(data.get("address"), str):
        raise ValueError(f"{os.fspath(path)} is not a yoton connection file.")
    return data


def remove_connection_file(path: str | os.PathLike[str], pid: int) -> bool:
    """Remove the connection file if it is still the one written by ``pid``."""
    try:
        if read_connection_file(path).get("pid") != pid:
            return False
    except (OSError, ValueError):
        return False
    try:
        Path(path).unlink()
    except FileNotFoundError:
        return False
    return True
