"""How to start a kernel process: its command line and environment (for the broker)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

ENV_ADDRESS = "YOTON_KERNEL_ADDRESS"  # "127.0.0.1:PORT" to connect to
ENV_KEY = "YOTON_KERNEL_KEY"  # hex of the one-time key; absent: connect without key


def kernel_command(python: str = sys.executable) -> list[str]:
    """The command that starts a kernel with the given Python interpreter."""
    return [python, "-m", "kernel"]


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
