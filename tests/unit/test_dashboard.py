"""docs/grafana-dashboard.json charts only series that resilient_kube.metrics exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from resilient_kube.metrics import ClientMetrics

DASHBOARD = Path(__file__).parents[2] / "docs" / "grafana-dashboard.json"


def test_every_series_the_dashboard_queries_exists() -> None:
    document = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    expressions = [
        target["expr"]
        for panel in document["panels"]
        if panel["type"] != "row"
        for target in panel["targets"]
    ]
    assert expressions
    exported = set()
    for family in ClientMetrics().collect():
        if family.type == "counter":
            exported.add(family.name + "_total")
        elif family.type == "histogram":
            exported.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        else:
            exported.add(family.name)
    queried = {
        name
        for expression in expressions
        for name in re.findall(r"\b(?:rest_client|resilient_kube)_\w+", expression)
    }
    assert queried - exported == set()
    # Every family is on the dashboard somewhere.
    charted = {re.sub(r"_(bucket|sum|count)$", "", name) for name in queried}
    assert {re.sub(r"_(bucket|sum|count)$", "", name) for name in exported} <= charted


def test_panels_do_not_overlap() -> None:
    document = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    taken: set[tuple[int, int]] = set()
    for panel in document["panels"]:
        grid = panel["gridPos"]
        cells = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, panel["title"]
        taken |= cells
    assert len({panel["id"] for panel in document["panels"]}) == len(document["panels"])
