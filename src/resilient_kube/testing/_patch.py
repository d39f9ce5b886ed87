"""The three PATCH flavours: JSON merge patch, strategic merge patch and JSON patch."""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["PatchError", "json_patch", "merge_patch", "strategic_merge_patch"]


class PatchError(ValueError):
    """The patch cannot be applied (the server answers 422 Invalid)."""


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply an RFC 7386 JSON merge patch: objects merge, ``null`` deletes, the rest replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _named_list(items: Any) -> bool:
    return isinstance(items, list) and all(
        isinstance(item, dict) and isinstance(item.get("name"), str) for item in items
    )


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Apply a strategic merge patch, as far as a fake server reasonably can.

    It is a merge patch, except that lists of objects with a ``name`` key (containers, env,
    volumes, volumeMounts, ...) merge item by item on that name, an item holding
    ``"$patch": "delete"`` removes the named item, and ``"$patch": "replace"`` in an object
    replaces it. Other ``$`` directives (``$setElementOrder``, ``$retainKeys``) are ignored.
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        elif value and _named_list(value) and _named_list(result.get(key)):
            result[key] = _merge_by_name(result[key], value)
        elif isinstance(value, list):
            result[key] = [item for item in copy.deepcopy(value) if not _is_delete(item)]
        else:
            result[key] = strategic_merge_patch(result.get(key), value)
    return result


def _is_delete(item: Any) -> bool:
    return isinstance(item, dict) and item.get("$patch") == "delete"


def _merge_by_name(current: list[dict[str, Any]], patch: list[dict[str, Any]]) -> list[Any]:
    merged = {item["name"]: item for item in current}
    for item in patch:
        name = item["name"]
        if _is_delete(item):
            merged.pop(name, None)
        else:
            merged[name] = strategic_merge_patch(merged.get(name), item)
    return list(merged.values())


def _pointer(path: str) -> list[str]:
    """Split an RFC 6901 JSON pointer into unescaped reference tokens."""
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}: must start with '/'")
    return [token.replace("~1", "/").replace("~0", "~") for token in path[1:].split("/")]


def _index(container: list[Any], token: str, path: str, *, adding: bool) -> int:
    if adding and token == "-":
        return len(container)
    if not token.isdigit() or (token != "0" and token.startswith("0")):
        raise PatchError(f"invalid array index {token!r} in {path!r}")
    index = int(token)
    if index > len(container) or (index == len(container) and not adding):
        raise PatchError(f"array index {index} out of range in {path!r}")
    return index


def _parent(doc: Any, tokens: list[str], path: str) -> Any:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, path, adding=False)]
        else:
            raise PatchError(f"path {path!r} does not exist")
    return node


def _get(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return doc
    parent, last = _parent(doc, tokens, path), tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, path, adding=False)]
    raise PatchError(f"path {path!r} does not exist")


def _add(doc: Any, path: str, value: Any) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent, last = _parent(doc, tokens, path), tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, path, adding=True), value)
    else:
        raise PatchError(f"cannot add at {path!r}: parent is not an object or array")
    return doc


def _remove(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        raise PatchError("cannot remove the whole document")
    parent, last = _parent(doc, tokens, path), tokens[-1]
    if isinstance(parent, dict) and last in parent:
        del parent[last]
    elif isinstance(parent, list):
        del parent[_index(parent, last, path, adding=False)]
    else:
        raise PatchError(f"cannot remove {path!r}: it does not exist")
    return doc


def json_patch(doc: Any, operations: Any) -> Any:
    """Apply an RFC 6902 JSON patch (add, remove, replace, test, move, copy) to a copy of ``doc``.

    Raises:
        PatchError: an operation is malformed, its path is missing, or a ``test`` fails.
    """
    if not isinstance(operations, list):
        raise PatchError("a JSON patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in operations:
        if not isinstance(op, dict) or not isinstance(op.get("path"), str):
            raise PatchError(f"invalid JSON patch operation {op!r}")
        kind, path = op.get("op"), op["path"]
        if kind in ("add", "replace", "test") and "value" not in op:
            raise PatchError(f"{kind} operation at {path!r} needs a value")
        if kind in ("move", "copy") and not isinstance(op.get("from"), str):
            raise PatchError(f"{kind} operation at {path!r} needs a 'from' pointer")
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op["value"]))
        elif kind == "remove":
            doc = _remove(doc, path)
        elif kind == "replace":
            _get(doc, path)  # replace needs an existing target (RFC 6902 section 4.3)
            value = copy.deepcopy(op["value"])
            doc = _add(_remove(doc, path), path, value) if path else value
        elif kind == "test":
            if _get(doc, path) != op["value"]:
                raise PatchError(f"test operation failed at {path!r}")
        elif kind == "move":
            value = _get(doc, op["from"])
            doc = _add(_remove(doc, op["from"]), path, value)
        elif kind == "copy":
            doc = _add(doc, path, copy.deepcopy(_get(doc, op["from"])))
        else:
            raise PatchError(f"unknown JSON patch operation {kind!r}")
    return doc
