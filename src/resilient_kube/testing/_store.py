"""The fake server's in-memory object store, its resource versions and its event log."""

from __future__ import annotations

import base64
import binascii
import copy
import json
import re
import secrets
import threading
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ._patch import PatchError, json_patch, merge_patch, strategic_merge_patch
from ._resources import Registry, ResourceType
from ._selectors import Matcher
from ._status import ApiStatusError

__all__ = ["DEFAULT_NAMESPACES", "Event", "ListResult", "Store", "filter_events"]

Object = dict[str, Any]

#: Namespaces that exist on a fresh cluster.
DEFAULT_NAMESPACES = ("default", "kube-node-lease", "kube-public", "kube-system")

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# The alphabet of generateName suffixes (k8s.io/apimachinery/pkg/util/rand), no vowels.
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"


@dataclass(frozen=True, slots=True)
class Event:
    """One change in the event log; ``previous`` is the object before a MODIFIED change."""

    resource_version: int
    key: tuple[str, str]
    namespace: str
    type: str
    object: Object
    previous: Object | None


@dataclass(frozen=True, slots=True)
class ListResult:
    items: list[Object]
    resource_version: str
    continue_token: str | None
    remaining: int | None


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _qualified(rt: ResourceType) -> str:
    return f"{rt.plural}.{rt.group}" if rt.group else rt.plural


def _details(rt: ResourceType, name: str) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name, "kind": rt.plural}
    if rt.group:
        details["group"] = rt.group
    return details


def _not_found(rt: ResourceType, name: str) -> ApiStatusError:
    return ApiStatusError(404, f'{_qualified(rt)} "{name}" not found', details=_details(rt, name))


def _conflict(rt: ResourceType, name: str) -> ApiStatusError:
    return ApiStatusError(
        409,
        f'Operation cannot be fulfilled on {_qualified(rt)} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        reason="Conflict",
        details=_details(rt, name),
    )


def _invalid(rt: ResourceType, name: str, cause: str) -> ApiStatusError:
    return ApiStatusError(
        422, f'{rt.kind} "{name}" is invalid: {cause}', details=_details(rt, name)
    )


def _metadata(obj: Object) -> dict[str, Any]:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = {}
        obj["metadata"] = meta
    return meta


def _spec_of(obj: Object) -> Object:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


class Store:
    """Objects by resource, namespace and name, with a global resource version counter.

    Every change bumps the counter, stamps the object with it and appends an ``Event`` to a
    log of the last ``event_window`` changes, which watches replay from. All methods are
    thread-safe; stored objects are replaced, never changed in place, so readers may keep
    references outside the lock.
    """

    def __init__(self, registry: Registry, *, event_window: int) -> None:
        self._registry = registry
        self._cond = threading.Condition()
        self._objects: dict[tuple[str, str], dict[tuple[str, str], Object]] = {}
        self._rv = 0
        self._events: deque[Event] = deque()
        self._window = event_window
        #: The newest resource version dropped from the event log; older watches get 410.
        self._compacted = 0
        self._closed = False
        namespaces = registry.find("", "v1", "namespaces")
        assert namespaces is not None  # Defensive: built in
        for name in DEFAULT_NAMESPACES:
            self.create(namespaces, "", {"metadata": {"name": name}})

    @property
    def resource_version(self) -> int:
        with self._cond:
            return self._rv

    def close(self) -> None:
        """Wake every waiting watch so it can end."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def compact(self) -> int:
        """Drop the whole event log: older versions and continue tokens now get 410."""
        with self._cond:
            self._events.clear()
            self._compacted = self._rv
            return self._rv

    # -- writes -----------------------------------------------------------------------------

    def _commit(
        self, rt: ResourceType, namespace: str, obj: Object, previous: Object | None
    ) -> Object:
        """Store ``obj`` (or delete it when its finalizers are done) and log the event."""
        meta = obj["metadata"]
        self._rv += 1
        meta["resourceVersion"] = str(self._rv)
        bucket = self._objects.setdefault(rt.key, {})
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            bucket.pop((namespace, meta["name"]), None)
            kind = "DELETED"
        else:
            bucket[(namespace, meta["name"])] = obj
            kind = "ADDED" if previous is None else "MODIFIED"
        self._events.append(Event(self._rv, rt.key, namespace, kind, obj, previous))
        while len(self._events) > self._window:
            self._compacted = self._events.popleft().resource_version
        self._cond.notify_all()
        return obj

    def _existing(self, rt: ResourceType, namespace: str, name: str) -> Object:
        obj = self._objects.get(rt.key, {}).get((namespace, name))
        if obj is None:
            raise _not_found(rt, name)
        return obj

    def _prepare(self, rt: ResourceType, namespace: str, body: Any) -> Object:
        if not isinstance(body, dict):
            raise ApiStatusError(400, f"the body of the request must be a {rt.kind} object")
        obj = copy.deepcopy(body)
        obj["kind"], obj["apiVersion"] = rt.kind, rt.api_version
        meta = _metadata(obj)
        if rt.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise ApiStatusError(
                    400,
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request",
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        return obj

    def create(self, rt: ResourceType, namespace: str, body: Any) -> Object:
        obj = self._prepare(rt, namespace, body)
        meta = obj["metadata"]
        with self._cond:
            if not meta.get("name") and meta.get("generateName"):
                while True:
                    suffix = "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(5))
                    meta["name"] = f"{meta['generateName']}{suffix}"
                    if (namespace, meta["name"]) not in self._objects.get(rt.key, {}):
                        break
            name = meta.get("name")
            if not name:
                raise _invalid(
                    rt, "", "metadata.name: Required value: name or generateName is required"
                )
            if not isinstance(name, str) or len(name) > 253 or not _NAME.match(name):
                raise _invalid(rt, str(name), f"metadata.name: Invalid value: {name!r}")
            if (namespace, name) in self._objects.get(rt.key, {}):
                raise ApiStatusError(
                    409,
                    f'{_qualified(rt)} "{name}" already exists',
                    reason="AlreadyExists",
                    details=_details(rt, name),
                )
            for field in ("deletionTimestamp", "deletionGracePeriodSeconds"):
                meta.pop(field, None)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _now()
            meta["generation"] = 1
            if rt.key == ("", "namespaces"):
                obj.setdefault("status", {}).setdefault("phase", "Active")
            return self._commit(rt, namespace, obj, None)

    def _write(
        self, rt: ResourceType, namespace: str, name: str, current: Object, new: Object,
        *, subresource: str | None,
    ) -> Object:  # fmt: skip
        """Carry server-owned fields from ``current`` into ``new`` and commit if changed."""
        if subresource == "status":
            new = {**copy.deepcopy(current), "status": copy.deepcopy(new.get("status"))}
            if new["status"] is None:
                del new["status"]
        meta, old_meta = _metadata(new), current["metadata"]
        if meta.get("name", name) != name:
            raise ApiStatusError(
                400,
                f"the name of the object ({meta['name']}) does not match the name on the URL "
                f"({name})",
            )
        version = meta.get("resourceVersion")
        if version not in (None, "") and version != old_meta["resourceVersion"]:
            raise _conflict(rt, name)
        meta["name"] = name
        for field in ("uid", "creationTimestamp", "deletionTimestamp", "generation"):
            if field in old_meta:
                meta[field] = old_meta[field]
            else:
                meta.pop(field, None)
        meta["resourceVersion"] = old_meta["resourceVersion"]
        if _spec_of(new) != _spec_of(current):
            meta["generation"] = old_meta.get("generation", 1) + 1
        if new == current:
            return current  # a no-op write changes nothing and sends no event, as upstream
        return self._commit(rt, namespace, new, current)

    def replace(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        body: Any,
        *,
        subresource: str | None = None,
    ) -> Object:
        new = self._prepare(rt, namespace, body)
        with self._cond:
            current = self._existing(rt, namespace, name)
            return self._write(rt, namespace, name, current, new, subresource=subresource)

    def patch(
        self, rt: ResourceType, namespace: str, name: str, content_type: str, patch: Any,
        *, subresource: str | None = None,
    ) -> Object:  # fmt: skip
        with self._cond:
            current = self._existing(rt, namespace, name)
            try:
                if content_type == JSON_PATCH:
                    patched = json_patch(current, patch)
                elif content_type == MERGE_PATCH:
                    patched = merge_patch(current, patch)
                elif content_type == STRATEGIC_MERGE_PATCH and not rt.custom:
                    patched = strategic_merge_patch(current, patch)
                else:
                    raise ApiStatusError(
                        415,
                        f"the body of the request was in an unknown format - accepted media "
                        f"types include: {JSON_PATCH}, {MERGE_PATCH}"
                        + ("" if rt.custom else f", {STRATEGIC_MERGE_PATCH}"),
                    )
            except PatchError as exc:
                raise _invalid(rt, name, str(exc)) from exc
            if not isinstance(patched, dict):
                raise _invalid(rt, name, "the patch result is not an object")
            new = self._prepare(rt, namespace, patched)
            return self._write(rt, namespace, name, current, new, subresource=subresource)

    def delete(self, rt: ResourceType, namespace: str, name: str, options: Any = None) -> Object:
        """Delete an object, or mark it for deletion while it still has finalizers."""
        preconditions = (options or {}).get("preconditions") or {}
        with self._cond:
            current = self._existing(rt, namespace, name)
            meta = current["metadata"]
            for field in ("uid", "resourceVersion"):
                wanted = preconditions.get(field)
                if wanted is not None and wanted != meta.get(field):
                    raise ApiStatusError(
                        409,
                        f"Precondition failed: {field}: {wanted}, "
                        f"object {field}: {meta.get(field)}",
                        reason="Conflict",
                        details=_details(rt, name),
                    )
            if meta.get("deletionTimestamp") and meta.get("finalizers"):
                return current
            deleted = {**current, "metadata": {**meta, "deletionTimestamp": _now()}}
            deleted["metadata"]["deletionGracePeriodSeconds"] = 0
            result = self._commit(rt, namespace, deleted, current)
            if rt.key == ("", "namespaces") and not meta.get("finalizers"):
                self._delete_namespace_contents(name)
            return result

    def _delete_namespace_contents(self, namespace: str) -> None:
        for rt in self._registry.types:
            if rt.namespaced:
                for ns, name in sorted(self._objects.get(rt.key, {})):
                    if ns == namespace:
                        self.delete(rt, ns, name)

    def delete_collection(
        self, rt: ResourceType, namespace: str | None, matches: Matcher
    ) -> list[Object]:
        with self._cond:
            doomed = self._select(rt, namespace, matches)
            return [
                self.delete(rt, o["metadata"].get("namespace", ""), o["metadata"]["name"])
                for o in doomed
            ]

    # -- reads ------------------------------------------------------------------------------

    def get(self, rt: ResourceType, namespace: str, name: str) -> Object:
        with self._cond:
            return self._existing(rt, namespace, name)

    def _select(self, rt: ResourceType, namespace: str | None, matches: Matcher) -> list[Object]:
        bucket = self._objects.get(rt.key, {})
        return [
            bucket[key]
            for key in sorted(bucket)
            if (namespace is None or key[0] == namespace) and matches(bucket[key])
        ]

    def list_page(
        self, rt: ResourceType, namespace: str | None, matches: Matcher, *, selected: bool,
        limit: int | None, continue_token: str | None,
    ) -> ListResult:  # fmt: skip
        """List objects sorted by namespace and name, ``limit`` at a time.

        ``selected`` says a label or field selector was given; the real server then leaves
        out ``remainingItemCount``, and so does this one.
        """
        with self._cond:
            start: tuple[str, str] | None = None
            if continue_token:
                version, start = _decode_continue(continue_token)
                if version < self._compacted:
                    raise ApiStatusError(
                        410,
                        "The provided continue parameter is too old to display a consistent "
                        "list result. You can start a new list without the continue parameter.",
                        reason="Expired",
                    )
            items = self._select(rt, namespace, matches)
            if start is not None:
                items = [
                    o for o in items
                    if (o["metadata"].get("namespace", ""), o["metadata"]["name"]) > start
                ]  # fmt: skip
            token, remaining = None, None
            if limit and len(items) > limit:
                last = items[limit - 1]["metadata"]
                token = _encode_continue(self._rv, (last.get("namespace", ""), last["name"]))
                remaining = None if selected else len(items) - limit
                items = items[:limit]
            return ListResult(items, str(self._rv), token, remaining)

    # -- watch ------------------------------------------------------------------------------

    def _check_window(self, version: int) -> None:
        if version < self._compacted:
            raise ApiStatusError(
                410,
                f"too old resource version: {version} ({self._compacted + 1})",
                reason="Expired",
            )

    def snapshot(
        self, rt: ResourceType, namespace: str | None, matches: Matcher
    ) -> tuple[list[Object], int]:
        """The matching objects and the resource version they were read at."""
        with self._cond:
            return self._select(rt, namespace, matches), self._rv

    def wait_for_events(
        self, rt: ResourceType, namespace: str | None, after: int, timeout: float
    ) -> tuple[list[Event], int]:
        """Return the events for ``rt`` newer than ``after``, waiting up to ``timeout`` for one.

        Returns the events and the resource version the caller has now seen everything up to.

        Raises:
            ApiStatusError: 410 Expired when ``after`` is older than the event window.
        """

        def fresh() -> list[Event]:
            return [
                e for e in self._events
                if e.resource_version > after and e.key == rt.key
                and (namespace is None or e.namespace == namespace)
            ]  # fmt: skip

        with self._cond:
            self._check_window(after)
            events = fresh()
            if not events and not self._closed:
                self._cond.wait_for(lambda: self._closed or bool(fresh()), timeout)
                events = fresh()
            self._check_window(after)
            return events, max(after, self._rv)


def _encode_continue(version: int, start: tuple[str, str]) -> str:
    raw = json.dumps({"rv": version, "start": list(start)}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_continue(token: str) -> tuple[int, tuple[str, str]]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        version, (namespace, name) = int(data["rv"]), data["start"]
        return version, (str(namespace), str(name))
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise ApiStatusError(400, f"continue key is not valid: {exc}") from exc


def filter_events(events: list[Event], matches: Matcher) -> list[tuple[str, Object]]:
    """Turn log events into what a selector-filtered watch sees.

    An object that starts matching arrives as ADDED and one that stops matching leaves as
    DELETED, as upstream's cacher does.
    """
    out: list[tuple[str, Object]] = []
    for event in events:
        now = event.type != "DELETED" and matches(event.object)
        before = event.previous is not None and matches(event.previous)
        if event.type == "DELETED":
            if matches(event.object):
                out.append(("DELETED", event.object))
        elif now and before:
            out.append(("MODIFIED", event.object))
        elif now:
            out.append(("ADDED", event.object))
        elif before:
            out.append(("DELETED", event.object))
    return out
