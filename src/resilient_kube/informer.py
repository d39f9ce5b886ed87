"""``kubernetes.informer``'s names, resilient: change the import and keep the code.

Example:
    >>> from resilient_kube.informer import ADDED, SharedInformer  # was: from kubernetes.informer
"""

from __future__ import annotations

from ._informer import (
    ADDED,
    BOOKMARK,
    DELETED,
    ERROR,
    MODIFIED,
    ObjectCache,
    SharedInformer,
    meta_namespace_key,
)

__all__ = [
    "ADDED",
    "BOOKMARK",
    "DELETED",
    "ERROR",
    "MODIFIED",
    "ObjectCache",
    "SharedInformer",
    "meta_namespace_key",
]
