"""The at-fork registry: weak, one entry per object, and one failing reset stops no other."""

from __future__ import annotations

import gc
import logging

import pytest

from resilient_kube import _fork
from tests.helpers.forking import in_child

pytestmark = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded:DeprecationWarning"
)


class Part:
    def __init__(self) -> None:
        self.resets = 0

    def reset(self) -> None:
        self.resets += 1


class Broken:
    def reset(self) -> None:
        raise RuntimeError("cannot reset")


def test_registration_does_not_keep_the_object_alive() -> None:
    part = Part()
    _fork.register(part, Part.reset)
    key = id(part)
    assert key in _fork._entries
    del part
    gc.collect()
    assert key not in _fork._entries


def test_reset_runs_once_per_object_in_the_child_only() -> None:
    part = Part()
    _fork.register(part, Part.reset)
    _fork.register(part, Part.reset)  # a second registration is ignored
    assert in_child(lambda: part.resets) == 1
    assert part.resets == 0  # the parent is untouched


def test_a_failing_reset_is_logged_and_the_others_still_run() -> None:
    broken, part = Broken(), Part()
    _fork.register(broken, Broken.reset)
    _fork.register(part, Part.reset)
    # The child reports what a handler of its own saw.
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    logging.getLogger("resilient_kube._fork").addHandler(handler)
    try:
        result = in_child(lambda: [part.resets, [r.getMessage() for r in records]])
    finally:
        logging.getLogger("resilient_kube._fork").removeHandler(handler)
    assert result[0] == 1
    assert any("after fork failed" in message for message in result[1])


def test_an_object_without_weak_references_is_refused() -> None:
    with pytest.raises(TypeError):
        _fork.register(3, lambda _: None)
