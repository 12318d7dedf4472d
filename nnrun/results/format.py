"""How tables show values: numbers at 4 decimals (3 significant digits outside [0.001, 1e5)),
times at 1, lists as JSON. `nnrun runs --filter` compares numbers at this precision, so what a
table shows is what a filter matches."""

from __future__ import annotations

import json


def number_text(value: float) -> str:
    """How tables show a number: 4 decimals, 3 significant digits outside [0.001, 1e5)."""
    return f"{value:.4f}" if 1e-3 <= abs(value) < 1e5 or value == 0 else f"{value:.3g}"


def fmt(value, key: str = "") -> str:
    """A table cell: - for nothing, seconds (`*time_s`) at 0.1, numbers as number_text, lists as JSON."""
    if value is None:
        return "-"
    if isinstance(value, float) and key.endswith("time_s"):
        return f"{value:.1f}"
    if isinstance(value, float):
        return number_text(value)  # what `nnrun runs --filter` compares at
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)
