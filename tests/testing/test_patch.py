"""The patch algorithms on their own: RFC 7386, RFC 6902 and strategic merge."""

from __future__ import annotations

from typing import Any

import pytest

from resilient_kube.testing._patch import (
    PatchError,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)


def test_merge_patch_rfc7386_examples() -> None:
    # RFC 7386 appendix A, a few of the rows.
    assert merge_patch({"a": "b"}, {"a": "c"}) == {"a": "c"}
    assert merge_patch({"a": "b"}, {"b": "c"}) == {"a": "b", "b": "c"}
    assert merge_patch({"a": "b"}, {"a": None}) == {}
    assert merge_patch({"a": [{"b": "c"}]}, {"a": [1]}) == {"a": [1]}
    assert merge_patch({"e": None}, {"a": 1}) == {"e": None, "a": 1}
    assert merge_patch([1, 2], {"a": "b", "c": None}) == {"a": "b"}
    assert merge_patch({}, {"a": {"bb": {"ccc": None}}}) == {"a": {"bb": {}}}


def test_merge_patch_does_not_touch_its_input() -> None:
    target: dict[str, Any] = {"a": {"b": 1}}
    merge_patch(target, {"a": {"c": 2}})
    assert target == {"a": {"b": 1}}


def test_strategic_merge_by_name_and_directives() -> None:
    target = {"env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}], "args": ["x"]}
    patch = {
        "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"},
                {"name": "A", "$patch": "delete"}],
        "args": ["y"],
        "$setElementOrder/env": [{"name": "B"}],
    }  # fmt: skip
    assert strategic_merge_patch(target, patch) == {
        "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}],
        "args": ["y"],
    }
    replaced = strategic_merge_patch(
        {"spec": {"a": 1, "b": 2}}, {"spec": {"$patch": "replace", "c": 3}}
    )
    assert replaced == {"spec": {"c": 3}}


def test_json_patch_operations() -> None:
    doc = {"a": [1, 2], "b": {"c~d": 1, "e/f": 2}}
    ops = [
        {"op": "add", "path": "/a/1", "value": 9},
        {"op": "add", "path": "/a/-", "value": 7},
        {"op": "remove", "path": "/b/c~0d"},
        {"op": "replace", "path": "/b/e~1f", "value": 3},
        {"op": "copy", "from": "/a/0", "path": "/first"},
        {"op": "move", "from": "/b", "path": "/moved"},
        {"op": "test", "path": "/moved/e~1f", "value": 3},
    ]
    assert json_patch(doc, ops) == {"a": [1, 9, 2, 7], "first": 1, "moved": {"e/f": 3}}
    assert doc == {"a": [1, 2], "b": {"c~d": 1, "e/f": 2}}


@pytest.mark.parametrize(
    "op",
    [
        {"op": "test", "path": "/a", "value": 2},
        {"op": "remove", "path": "/missing"},
        {"op": "replace", "path": "/missing", "value": 1},
        {"op": "add", "path": "/x/y", "value": 1},
        {"op": "add", "path": "/list/5", "value": 1},
        {"op": "add", "path": "/list/01", "value": 1},
        {"op": "add", "path": "a", "value": 1},
        {"op": "add", "path": "/a"},
        {"op": "move", "path": "/a"},
        {"op": "frobnicate", "path": "/a"},
        "not an operation",
    ],
)
def test_json_patch_errors(op: Any) -> None:
    with pytest.raises(PatchError):
        json_patch({"a": 1, "list": [0]}, [op])


def test_json_patch_must_be_a_list() -> None:
    with pytest.raises(PatchError, match="list"):
        json_patch({}, {"op": "add"})
