"""The resource types the fake server knows, and the discovery documents that describe them."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any

__all__ = ["BUILTIN_RESOURCES", "CustomResource", "Registry", "ResourceType"]

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_KIND = re.compile(r"^[A-Z][A-Za-z0-9]*$")

_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True, slots=True)
class CustomResource:
    """A custom resource the fake server serves as if its CRD were installed.

    Args:
        group: API group, e.g. ``"example.test"``.
        version: API version, e.g. ``"v1"``.
        plural: the URL name, e.g. ``"widgets"``.
        kind: the object kind, e.g. ``"Widget"``.
        namespaced: False for a cluster-scoped resource.
        short_names: names ``kubectl`` would accept, listed in discovery.

    Example:
        >>> CustomResource("example.test", "v1", "widgets", "Widget")
        CustomResource(group='example.test', version='v1', plural='widgets', kind='Widget', namespaced=True, short_names=())
    """  # noqa: E501

    group: str
    version: str
    plural: str
    kind: str
    _: KW_ONLY
    namespaced: bool = True
    short_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.group, str) or not _DNS_SUBDOMAIN.match(self.group):
            raise ValueError(f"group={self.group!r} must be a DNS subdomain such as 'example.test'")
        if not isinstance(self.version, str) or not _DNS_LABEL.match(self.version):
            raise ValueError(f"version={self.version!r} must be a DNS label such as 'v1'")
        if not isinstance(self.plural, str) or not _DNS_LABEL.match(self.plural):
            raise ValueError(f"plural={self.plural!r} must be a lowercase DNS label")
        if not isinstance(self.kind, str) or not _KIND.match(self.kind):
            raise ValueError(f"kind={self.kind!r} must be a CamelCase name such as 'Widget'")
        if not isinstance(self.namespaced, bool):
            raise ValueError(f"namespaced={self.namespaced!r} must be True or False")


@dataclass(frozen=True, slots=True)
class ResourceType:
    """One servable resource: built-in or custom."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    custom: bool = False
    #: The DELETE response is the object (pods, namespaces, custom resources), else a Status.
    delete_returns_object: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    def describe(self) -> list[dict[str, Any]]:
        """Return this resource's ``APIResource`` entries (the resource and its status)."""
        entry: dict[str, Any] = {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(_VERBS),
        }
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        status = {
            "name": f"{self.plural}/status",
            "singularName": "",
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": ["get", "patch", "update"],
        }
        return [entry, status]


def _core(plural: str, kind: str, namespaced: bool = True, *short: str) -> ResourceType:
    returns_object = plural in ("pods", "namespaces")
    return ResourceType("", "v1", plural, kind, namespaced, short, False, returns_object)


def _grouped(gv: str, plural: str, kind: str, *short: str) -> ResourceType:
    group, version = gv.split("/")
    return ResourceType(group, version, plural, kind, True, short)


#: Built-in kinds: enough of core/v1, apps/v1, batch/v1 and coordination for a controller.
BUILTIN_RESOURCES: tuple[ResourceType, ...] = (
    _core("namespaces", "Namespace", False, "ns"),
    _core("nodes", "Node", False, "no"),
    _core("configmaps", "ConfigMap", True, "cm"),
    _core("secrets", "Secret"),
    _core("pods", "Pod", True, "po"),
    _core("services", "Service", True, "svc"),
    _core("serviceaccounts", "ServiceAccount", True, "sa"),
    _core("endpoints", "Endpoints", True, "ep"),
    _core("events", "Event", True, "ev"),
    _core("persistentvolumeclaims", "PersistentVolumeClaim", True, "pvc"),
    _grouped("apps/v1", "deployments", "Deployment", "deploy"),
    _grouped("apps/v1", "statefulsets", "StatefulSet", "sts"),
    _grouped("apps/v1", "daemonsets", "DaemonSet", "ds"),
    _grouped("apps/v1", "replicasets", "ReplicaSet", "rs"),
    _grouped("batch/v1", "jobs", "Job"),
    _grouped("batch/v1", "cronjobs", "CronJob", "cj"),
    _grouped("coordination.k8s.io/v1", "leases", "Lease"),
)


class Registry:
    """Resource types by group, version and plural, plus the discovery documents."""

    def __init__(self, custom: Iterable[CustomResource] = ()) -> None:
        types = list(BUILTIN_RESOURCES)
        for cr in custom:
            if not isinstance(cr, CustomResource):
                raise TypeError(f"custom_resources must hold CustomResource, not {cr!r}")
            types.append(
                ResourceType(
                    cr.group, cr.version, cr.plural, cr.kind, cr.namespaced,
                    cr.short_names, custom=True, delete_returns_object=True,
                )
            )  # fmt: skip
        self._by_gvp: dict[tuple[str, str, str], ResourceType] = {}
        for rt in types:
            gvp = (rt.group, rt.version, rt.plural)
            if gvp in self._by_gvp:
                raise ValueError(f"resource {rt.api_version} {rt.plural} is registered twice")
            self._by_gvp[gvp] = rt
        self.types: tuple[ResourceType, ...] = tuple(types)

    def find(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._by_gvp.get((group, version, plural))

    def has_group_version(self, group: str, version: str) -> bool:
        return any(rt.group == group and rt.version == version for rt in self.types)

    def _group_versions(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for rt in self.types:
            if rt.group and rt.version not in groups.setdefault(rt.group, []):
                groups[rt.group].append(rt.version)
        return groups

    def api_versions(self, server_address: str) -> dict[str, Any]:
        """``GET /api``."""
        return {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
            ],
        }

    def api_group(self, name: str) -> dict[str, Any] | None:
        """``GET /apis/{group}``, or None when the group is unknown."""
        versions = self._group_versions().get(name)
        if versions is None:
            return None
        entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
        return {
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": name,
            "versions": entries,
            "preferredVersion": entries[0],
        }

    def api_group_list(self) -> dict[str, Any]:
        """``GET /apis``."""
        groups = []
        for name in self._group_versions():
            group = self.api_group(name)
            assert group is not None  # Defensive: name comes from the same table
            del group["kind"], group["apiVersion"]
            groups.append(group)
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def api_resource_list(self, group: str, version: str) -> dict[str, Any] | None:
        """``GET /api/v1`` or ``GET /apis/{group}/{version}``, or None when unknown."""
        if not self.has_group_version(group, version):
            return None
        resources: Sequence[ResourceType] = [
            rt for rt in self.types if rt.group == group and rt.version == version
        ]
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": [entry for rt in resources for entry in rt.describe()],
        }
