"""Tables for the command line: whole values always, for people and for pipes alike.

On a terminal a table is drawn with rich, where ids never shrink (they are copied into other
commands) and long text wraps rather than being cut. Anywhere else (a pipe, a file) the output
is tab-separated: a header line, then one line per row, each value whole, so that `cut`, `awk`
and spreadsheets read it. Every list also has `--json`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table


def _plain(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("\t", " ").replace("\r", " ").replace("\n", " ")


def print_table(
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    keep_whole: Sequence[str] = ("id",),
    heading: bool = False,
    out: TextIO | None = None,
) -> None:
    """Print rows under `columns`; the `keep_whole` columns are never wrapped or shortened.
    `heading` puts `# title` above the plain form too (for commands that print several tables)."""
    stream = out or sys.stdout
    if not stream.isatty():
        if heading:
            stream.write(f"# {title}\n")
        stream.write("\t".join(columns) + "\n")
        for row in rows:
            stream.write("\t".join(_plain(cell) for cell in row) + "\n")
        stream.flush()
        return
    table = Table(title=title)
    for index, column in enumerate(columns):
        if column in keep_whole:
            widest = max([len(column), *(len(_plain(row[index])) for row in rows)])
            table.add_column(column, no_wrap=True, min_width=widest)
        else:
            table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(_plain(cell) for cell in row))
    Console(file=stream).print(table)


def print_fields(
    title: str, fields: Sequence[tuple[str, Any]], *, heading: bool = False, out: TextIO | None = None
) -> None:
    """Print name/value pairs: a two-column table on a terminal, `name<TAB>value` lines elsewhere."""
    stream = out or sys.stdout
    if not stream.isatty():
        if heading:
            stream.write(f"# {title}\n")
        for name, value in fields:
            stream.write(f"{_plain(name)}\t{_plain(value)}\n")
        stream.flush()
        return
    table = Table(title=title, show_header=False)
    table.add_column("field", no_wrap=True)
    table.add_column("value", overflow="fold")
    for name, value in fields:
        table.add_row(_plain(name), _plain(value))
    Console(file=stream).print(table)
