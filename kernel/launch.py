"""How to start a kernel process: its command line and environment (for the broker)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

ENV_ADDRESS = "YOTON_KERNEL_ADDRESS"  # "127.0.0.1:PORT" to connect to
ENV_KEY = "YOTON_KERNEL_KEY"  # hex of the one-time key; absent: connect without key


# ``python -m NAME`` imports NAME from the current directory first, so a user's
# own kernel.py (or broker.py, yoton.py) would run instead of ours. This runs the
# module with the current directory taken off the path.
_SAFE_RUN = (
    "import sys, runpy; sys.path.pop(0); "
    "runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
)


def module_command(module: str, python: str = sys.executable) -> list[str]:
    """Like ``[python, "-m", module]``, but immune to same-named files in the cwd."""
    return [python, "-c", _SAFE_RUN.format(module=module)]


def kernel_command(python: str = sys.executable) -> list[str]:
    """The command that starts a kernel with the given Python interpreter."""
    return module_command("kernel", python)


def kernel_environment(
    address: str, key: bytes | None, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """A copy of ``base`` (default os.environ) with the kernel's address and key."""
    env = dict(os.environ if base is None else base)
    env[ENV_ADDRESS] = address
    if key is None:
        env.pop(ENV_KEY, None)
    else:
        env[ENV_KEY] = key.hex()
    return env
