"""Run a function in a child made by a real ``os.fork()`` and get its JSON result back."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["CHILD_TIMEOUT", "held", "in_child"]

#: The longest a child may take; a child still running then is killed and the test fails.
CHILD_TIMEOUT = 20.0


def in_child(work: Callable[[], Any], timeout: float = CHILD_TIMEOUT) -> Any:
    """Fork, run ``work()`` in the child and return what it returned (JSON round-tripped).

    The child writes ``{"result": ...}`` or ``{"error": traceback}`` to a pipe and leaves with
    ``os._exit``, so it never runs the parent's pytest machinery. An error in the child, or a
    child that does not finish within ``timeout`` (it is killed), raises ``AssertionError``.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            os.close(read_end)
            try:
                message = {"result": work()}
            except BaseException:
                message = {"error": traceback.format_exc()}
            data = json.dumps(message).encode()
            while data:
                data = data[os.write(write_end, data) :]
        finally:
            os._exit(0)
    os.close(write_end)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([read_end], [], [], max(left, 0.0))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                raise AssertionError(f"the forked child did not finish within {timeout} s")
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    message = json.loads(b"".join(chunks) or b"{}")
    if "error" in message:
        raise AssertionError(f"the forked child failed:\n{message['error']}")
    assert "result" in message, "the forked child exited without a result"
    return message["result"]


@contextlib.contextmanager
def held(*locks: Any) -> Iterator[None]:
    """Hold ``locks`` on another thread for the duration: a fork inside sees them taken."""
    taken = threading.Event()
    release = threading.Event()

    def hold() -> None:
        for lock in locks:
            lock.acquire()
        taken.set()
        release.wait(CHILD_TIMEOUT)
        for lock in reversed(locks):
            lock.release()

    thread = threading.Thread(target=hold, name="lock-holder")
    thread.start()
    try:
        assert taken.wait(CHILD_TIMEOUT), "the lock holder did not get the locks"
        yield
    finally:
        release.set()
        thread.join(CHILD_TIMEOUT)
