"""docs/testing.md shows the controller example exactly as tests/testing runs it."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_controller_example_matches_the_docs() -> None:
    doc = (ROOT / "docs" / "testing.md").read_text(encoding="utf-8")
    test = (Path(__file__).parent / "test_controller_example.py").read_text(encoding="utf-8")
    example = test.split("\n", 2)[2].lstrip("\n")  # without the module docstring
    assert f"```python\n{example}```" in doc
