"""The informer's rules without I/O: the relist difference and the step after a failure."""

from __future__ import annotations

import random
from typing import Any

from kubernetes.client import V1ConfigMap, V1ObjectMeta
from kubernetes.client.exceptions import ApiException

from resilient_kube import ConnectError, ResourceExpired
from resilient_kube._backoff import Backoff
from resilient_kube._informer import meta_namespace_key
from resilient_kube._informer_rules import after_failure, meta_of, relist_changes
from tests.helpers.clock import FakeClock


def cm(name: str, uid: str, version: str) -> V1ConfigMap:
    return V1ConfigMap(
        metadata=V1ObjectMeta(name=name, namespace="ns", uid=uid, resource_version=version)
    )


def test_relist_delivers_only_the_difference() -> None:
    old = {
        meta_namespace_key(o): o
        for o in [cm("gone", "u1", "1"), cm("same", "u2", "2"), cm("changed", "u3", "3"),
                  cm("replaced", "u4", "4")]
    }  # fmt: skip
    listed = [cm("same", "u2", "2"), cm("changed", "u3", "9"), cm("replaced", "u5", "10"),
              cm("new", "u6", "11")]  # fmt: skip
    by_key, calls = relist_changes(old, listed, meta_namespace_key)
    assert set(by_key) == {"ns/same", "ns/changed", "ns/replaced", "ns/new"}
    assert [(kind, o.metadata.name, o.metadata.uid) for kind, o in calls] == [
        ("DELETED", "gone", "u1"),
        ("DELETED", "replaced", "u4"),  # the old object behind the name, first
        ("MODIFIED", "changed", "u3"),
        ("ADDED", "replaced", "u5"),
        ("ADDED", "new", "u6"),
    ]


def test_first_list_is_all_added() -> None:
    listed = [cm("a", "u1", "1"), cm("b", "u2", "2")]
    _, calls = relist_changes({}, listed, meta_namespace_key)
    assert [kind for kind, _ in calls] == ["ADDED", "ADDED"]


def test_meta_of_reads_models_and_dicts() -> None:
    assert meta_of(cm("a", "u", "7")) == ("u", "7")
    raw: dict[str, Any] = {"metadata": {"uid": "u", "resourceVersion": "7"}}
    assert meta_of(raw) == ("u", "7")
    assert meta_of(object()) == (None, None)


def test_expired_watch_relists_at_once() -> None:
    backoff = Backoff(clock=FakeClock(), rng=random.Random(1))
    step = after_failure(ResourceExpired(), backoff, listing=False)
    assert (step.action, step.wait, step.reason) == ("relist", 0.0, "expired")
    assert backoff.steps == 0


def test_failures_back_off_and_count_wire_attempts() -> None:
    backoff = Backoff(clock=FakeClock(), rng=random.Random(1))
    step = after_failure(ConnectError("refused", attempts=5), backoff, listing=False)
    assert (step.action, step.reason) == ("rewatch", "connect")
    assert 0 <= step.wait <= 0.8 * 2**4
    assert backoff.steps == 5


def test_unauthorized_and_failed_lists_back_off_too() -> None:
    backoff = Backoff(clock=FakeClock(), rng=random.Random(1))
    for status in (401, 403, 410):
        step = after_failure(ApiException(status=status), backoff, listing=True)
        assert step.action == "relist"
        assert step.reason == f"status_{status}"
    assert backoff.steps == 3
