"""The start-up tables' text layout (Triton's): rules, padded cells, a multi-line cell spread over rows."""

from seawall.core.text_table import render


def test_cells_are_padded_to_the_widest_and_ruled() -> None:
    assert render(("Model", "Version", "Status"), [("add_sub", "1", "READY")]) == [
        "+---------+---------+--------+",
        "| Model   | Version | Status |",
        "+---------+---------+--------+",
        "| add_sub | 1       | READY  |",
        "+---------+---------+--------+",
    ]


def test_a_multi_line_cell_continues_on_rows_with_the_other_cells_blank() -> None:
    lines = render(("Model", "Status"), [("m", "UNAVAILABLE: boom\nAt:\n  model.py(1)"), ("n", "")])
    assert lines[3:7] == [
        "| m     | UNAVAILABLE: boom |",
        "|       | At:               |",
        "|       |   model.py(1)     |",
        "| n     |                   |",
    ]
