"""``python -m resilient_kube``: the ``resilient-kube`` command."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
