"""Entry point: ``python -m kernel``, launched by the broker.

The address and the one-time key come in environment variables (not argv, so they
do not show in ``ps``) and are removed from the environment at once, so user code
and its subprocesses never see them.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping

from kernel.launch import ENV_ADDRESS, ENV_KEY


def read_launch_environment(
    environ: MutableMapping[str, str],
) -> tuple[str, bytes | None]:
    """Pop the address and key variables from ``environ``; return (address, key)."""
    address = environ.pop(ENV_ADDRESS, "")
    key_hex = environ.pop(ENV_KEY, None)
    if not address:
        raise ValueError(f"{ENV_ADDRESS} is not set")
    key = bytes.fromhex(key_hex) if key_hex is not None else None
    return address, key


def main() -> int:
    """Start the kernel; return its exit code."""
    logging.basicConfig(
        level=logging.WARNING,
        format="kernel %(levelname)s %(name)s: %(message)s",
        stream=sys.__stderr__,
    )
    try:
        address, key = read_launch_environment(os.environ)
    except ValueError as err:
        logging.getLogger("kernel").error("%s", err)
        return 2
    # Our own modules first, before the user's directory can shadow them.
    import yoton
    from kernel.channels import run

    # Like python -i: an empty argv[0] and the current directory first on the path.
    sys.argv = [""]
    if sys.path and sys.path[0] == os.getcwd():
        sys.path[0] = ""
    elif "" not in sys.path:
        sys.path.insert(0, "")

    try:
        return run(address, key)
    except (yoton.ConnectFailedError, yoton.AuthenticationError) as err:
        logging.getLogger("kernel").error("%s", err)
        return 1


if __name__ == "__main__":
    sys.exit(main())
