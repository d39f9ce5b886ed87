"""Label and field selectors, and ``limit``/``continue`` pagination."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubernetes.client.exceptions import ApiException

from resilient_kube.testing._selectors import parse_field_selector, parse_label_selector


def _obj(**labels: str) -> dict[str, Any]:
    return {"metadata": {"name": "x", "labels": labels}, "status": {"phase": "Running"}}


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("app=web", {"app": "web"}, True),
        ("app==web", {"app": "web"}, True),
        ("app=web", {"app": "db"}, False),
        ("app!=web", {"app": "db"}, True),
        ("app!=web", {}, True),  # upstream: != also matches a missing key
        ("app in (web, db)", {"app": "db"}, True),
        ("app in (web,db)", {"app": "cache"}, False),
        ("app in (web)", {}, False),
        ("app notin (web,db)", {"app": "cache"}, True),
        ("app notin (web,db)", {}, True),
        ("app notin (web,db)", {"app": "web"}, False),
        ("app", {"app": ""}, True),
        ("app", {}, False),
        ("!app", {}, True),
        ("!app", {"app": "web"}, False),
        ("app=web,tier in (a,b),!canary", {"app": "web", "tier": "b"}, True),
        ("app=web,tier in (a,b),!canary", {"app": "web", "tier": "b", "canary": "1"}, False),
        ("example.test/team=blue", {"example.test/team": "blue"}, True),
        ("", {"anything": "x"}, True),
    ],
)
def test_label_selector(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert parse_label_selector(selector)(_obj(**labels)) is expected


@pytest.mark.parametrize("selector", ["app=", "=web", "a b", "app in web", "a,,b", "Bad Key=1"])
def test_invalid_label_selector(selector: str) -> None:
    if selector == "app=":
        assert parse_label_selector(selector)(_obj(app=""))  # an empty value is valid
        return
    with pytest.raises(ValueError, match=r"invalid|empty"):
        parse_label_selector(selector)


def test_field_selector() -> None:
    obj = _obj()
    assert parse_field_selector("metadata.name=x")(obj)
    assert parse_field_selector("metadata.name==x,status.phase=Running")(obj)
    assert not parse_field_selector("metadata.name!=x")(obj)
    assert parse_field_selector("spec.nodeName=")(obj)
    with pytest.raises(ValueError, match="field selector"):
        parse_field_selector("metadata.name")


@given(st.dictionaries(st.sampled_from(["a", "b", "c"]), st.sampled_from(["1", "2"])))
def test_set_operators_are_complements(labels: dict[str, str]) -> None:
    obj = _obj(**labels)
    assert parse_label_selector("a in (1)")(obj) != parse_label_selector("a notin (1)")(obj)
    assert parse_label_selector("b")(obj) != parse_label_selector("!b")(obj)
    assert parse_label_selector("c=2")(obj) != parse_label_selector("c!=2")(obj)


def test_selectors_through_the_api(core: Any) -> None:
    for name, labels in (("a", {"app": "web"}), ("b", {"app": "db"}), ("c", {})):
        core.create_namespaced_config_map("default", {"metadata": {"name": name, "labels": labels}})

    def names(**kwargs: str) -> list[str]:
        listed = core.list_namespaced_config_map("default", **kwargs)
        return [item.metadata.name for item in listed.items]

    assert names(label_selector="app=web") == ["a"]
    assert names(label_selector="app!=web") == ["b", "c"]
    assert names(label_selector="app in (web,db)") == ["a", "b"]
    assert names(label_selector="app notin (web)") == ["b", "c"]
    assert names(label_selector="app") == ["a", "b"]
    assert names(label_selector="!app") == ["c"]
    assert names(field_selector="metadata.name=b") == ["b"]
    with pytest.raises(ApiException) as info:
        names(label_selector="app in web")
    assert info.value.status == 400


def test_pagination(core: Any) -> None:
    for i in range(7):
        core.create_namespaced_config_map("default", {"metadata": {"name": f"cm-{i}"}})
    seen, token, pages = [], None, 0
    while True:
        page = core.list_namespaced_config_map("default", limit=3, _continue=token)
        pages += 1
        seen += [item.metadata.name for item in page.items]
        token = page.metadata._continue
        if not token:
            assert page.metadata.remaining_item_count is None
            break
        assert page.metadata.remaining_item_count == 7 - len(seen)
    assert pages == 3
    assert seen == [f"cm-{i}" for i in range(7)]


def test_pagination_with_selector_has_no_remaining_count(core: Any) -> None:
    for i in range(4):
        core.create_namespaced_config_map(
            "default", {"metadata": {"name": f"cm-{i}", "labels": {"keep": "yes"}}}
        )
    page = core.list_namespaced_config_map("default", limit=2, label_selector="keep=yes")
    assert page.metadata._continue
    assert page.metadata.remaining_item_count is None


def test_bad_continue_token(core: Any) -> None:
    with pytest.raises(ApiException) as info:
        core.list_namespaced_config_map("default", limit=1, _continue="not-a-token")
    assert info.value.status == 400
