"""Plain-text tables as Triton logs them at start-up (`+---+` rules, `| cell |` rows); a cell with several
lines becomes several rows, the later ones with the other columns blank.

Imports nothing of Seawall: the CLI's option table and the core's model table both use it.
"""

from __future__ import annotations

from collections.abc import Sequence


def render(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """The table's lines, one per log record (a record never spans lines)."""
    lines = [_physical(row) for row in rows]
    flat = [list(header), *(line for row in lines for line in row)]
    widths = [max(len(line[column]) for line in flat) for column in range(len(header))]
    rule = "+" + "+".join("-" * (width + 2) for width in widths) + "+"

    def row_text(cells: Sequence[str]) -> str:
        return "|" + "|".join(f" {cell:<{width}} " for cell, width in zip(cells, widths, strict=True)) + "|"

    return [rule, row_text(header), rule, *(row_text(line) for row in lines for line in row), rule]


def _physical(row: Sequence[str]) -> list[list[str]]:
    """A logical row as physical rows: cell `i` of physical row `k` is line `k` of cell `i`, or blank."""
    split = [cell.splitlines() or [""] for cell in row]
    height = max(len(cell) for cell in split)
    return [[cell[k] if k < len(cell) else "" for cell in split] for k in range(height)]
