from __future__ import annotations

import types

import resilient_kube
import resilient_kube.errors


def test_all_is_complete_and_sorted() -> None:
    # Submodules (errors, testing, cli, ...) appear as attributes once imported; pytest rewrites
    # the package (its plugin lives there) and adds "@py_*" names.
    public = {
        name
        for name, value in vars(resilient_kube).items()
        if not name.startswith(("_", "@")) and not isinstance(value, types.ModuleType)
    }
    modules = {"annotations"}
    assert set(resilient_kube.__all__) - {"__version__"} == public - modules

    # isort style, as ruff's RUF022 keeps it: CONSTANTS, then Classes, then the rest.
    def order(name: str) -> tuple[int, str]:
        rank = 0 if name.isupper() else 1 if name[0].isupper() else 2
        return rank, name

    assert resilient_kube.__all__ == sorted(resilient_kube.__all__, key=order)


def test_errors_module_exports_every_exception() -> None:
    exported = set(resilient_kube.errors.__all__)
    defined = {
        name
        for name, value in vars(resilient_kube.errors).items()
        if isinstance(value, type)
        and issubclass(value, Exception)
        and value.__module__ == "resilient_kube.errors"
    }
    assert exported == defined
