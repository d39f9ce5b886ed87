"""``resilient_kube.testing`` exports exactly its public names, sorted as ruff sorts them."""

from __future__ import annotations

import importlib

import resilient_kube.testing

MODULES = ("_faults", "_listener", "_patch", "_resources", "_selectors", "_server", "_status",
           "_store", "_tls", "pytest_plugin")  # fmt: skip


def _order(name: str) -> tuple[int, str]:
    return (0 if name.isupper() else 1 if name[0].isupper() else 2), name


def test_all_is_complete_and_sorted() -> None:
    package = resilient_kube.testing
    # "@py_builtins" and friends: pytest rewrites the asserts of plugin packages.
    public = {name for name in vars(package) if not name.startswith(("_", "@"))}
    assert set(package.__all__) == public - {"annotations", "pytest_plugin"}
    assert package.__all__ == sorted(package.__all__, key=_order)


def test_every_module_all_names_exist() -> None:
    for name in MODULES:
        module = importlib.import_module(f"resilient_kube.testing.{name}")
        assert module.__all__ == sorted(module.__all__, key=_order), name
        for exported in module.__all__:
            assert hasattr(module, exported), f"{name}.{exported}"
