"""Shared fixtures: contexts that are always closed, and a connected pair."""

import pytest

import yoton


@pytest.fixture
def make_context():
    """Create contexts that are closed at the end of the test."""
    contexts = []

    def make(**kwargs):
        context = yoton.Context(**kwargs)
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def pair(make_context):
    """Two connected contexts (a binds on a free port, b connects)."""
    a = make_context()
    b = make_context()
    conn = a.bind("localhost:0")
    b.connect(f"localhost:{conn.port1}", timeout=5)
    wait_for(lambda: conn.is_connected)
    return a, b


def wait_for(predicate, timeout=10.0):
    """Wait until predicate() is true; fail the test after ``timeout`` s."""
    import threading
    import time

    deadline = time.monotonic() + timeout
    event = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        event.wait(0.01)
    return True


def wait_until(predicate, timeout: float = 10.0) -> bool:
    """Wait until predicate() is true; return whether it became true in time."""
    import threading
    import time

    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not predicate():
        if time.monotonic() > deadline:
            return False
        pause.wait(0.005)
    return True
