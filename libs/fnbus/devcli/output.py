"""Tables for people, JSON for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()
err = Console(stderr=True, soft_wrap=True)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def when(ms: Any) -> str:
    if not isinstance(ms, int | float):
        return ""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]],
          title: str | None = None) -> None:
    """Print ``rows`` as a table of ``columns`` (key, heading); keys ending in _ms are times."""
    out = Table(title=title)
    for _, heading in columns:
        out.add_column(heading)
    for row in rows:
        cells = []
        for key, _ in columns:
            value = row.get(key)
            if key.endswith("_ms"):
                cells.append(when(value))
            elif isinstance(value, list | dict):
                cells.append(json.dumps(value, ensure_ascii=False))
            else:
                cells.append("" if value is None else str(value))
        out.add_row(*cells)
    console.print(out)
