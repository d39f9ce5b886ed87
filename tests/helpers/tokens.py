"""A service-account token volume written the way the kubelet writes it."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ProjectedToken"]


class ProjectedToken:
    """A service-account token volume as the kubelet writes it: ``token -> ..data/token``,
    ``..data -> ..<timestamp>``; a rotation writes a new directory and swaps ``..data``."""

    def __init__(self, directory: Path, token: str) -> None:
        self.directory = directory
        self.path = directory / "token"
        self.generation = 0
        self._write(token)
        self.path.symlink_to(Path("..data") / "token")

    def _write(self, token: str) -> None:
        self.generation += 1
        target = self.directory / f"..2026_12_03_{self.generation}"
        target.mkdir()
        (target / "token").write_text(token, encoding="utf-8")
        staged = self.directory / "..data_tmp"
        staged.symlink_to(target.name)
        os.replace(staged, self.directory / "..data")  # the atomic swap

    def rotate(self, token: str) -> None:
        self._write(token)
