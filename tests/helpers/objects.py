"""Kubernetes objects as users write them, for the tests of the sync and asyncio clients."""

from __future__ import annotations

__all__ = ["configmap"]


def configmap(name: str, namespace: str = "default", **labels: str) -> dict[str, object]:
    """A ConfigMap body as users write it."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "data": {"key": "value"},
    }
