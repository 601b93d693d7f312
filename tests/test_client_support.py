"""Helpers for the client and console tests: a real broker process per test.

Imported by tests/test_client_*.py and tests/test_console_*.py. The broker runs in
a session of its own, so the finalizer can kill it and its kernel as one group.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = str(Path(__file__).resolve().parent.parent)

#: Generous waits: the machine may be busy running other tests.
WAIT = 30.0


def child_environment(home: Path) -> dict[str, str]:
    """Environment for broker and console processes: project importable, tmp HOME."""
    env = dict(os.environ)
    paths = [ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["HOME"] = str(home)
    env["XDG_RUNTIME_DIR"] = str(home / "run")
    env.pop("XDG_STATE_HOME", None)
    env["YOTON_CONSOLE_HISTORY"] = str(home / "history")
    env["TMPDIR"] = str(home / "tmp")
    env["TERM"] = "xterm"
    env["PYTHONFAULTHANDLER"] = "1"  # SIGABRT dumps every thread's stack
    env.pop("PYTHONSTARTUP", None)
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    return env


@dataclass
class BrokerProcess:
    """A running ``python -m broker`` and its connection file."""

    process: subprocess.Popen
    connection_file: Path
    address: str
    key: str

    def stop(self) -> None:
        """Terminate the broker; kill its process group if it lingers."""
        stop_process_group(self.process)


def stop_process_group(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL to the whole group (broker and kernels)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if process.poll() is None:
        process.wait(10)
    if process.stdout is not None:
        process.stdout.close()


def start_broker(home: Path, *args: str) -> BrokerProcess:
    """Start a broker writing its connection file below ``home``; wait until ready."""
    connection_file = home / "broker.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "broker", "--connection-file", str(connection_file)]
        + list(args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
        cwd=str(home),
        env=child_environment(home),
        start_new_session=True,
    )
    line = process.stdout.readline()  # printed once listening
    if not line:
        stop_process_group(process)
        pytest.fail("the broker exited before it was ready")
    data = json.loads(connection_file.read_text())
    return BrokerProcess(process, connection_file, data["address"], data["key"])


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A home directory for the processes of one test."""
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def broker(home: Path):
    """A running broker (with its kernel), stopped after the test."""
    proc = start_broker(home)
    try:
        yield proc
    finally:
        proc.stop()


def test_support_broker_writes_connection_file(broker):
    data = json.loads(broker.connection_file.read_text())
    assert data["address"] == broker.address and data["key"]
    assert broker.process.poll() is None
