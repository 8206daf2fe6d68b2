"""Reading the files users give the tasks: UTF-8 text, CSV files with a header, numbers in fields.
Every problem is an error of the task's own kind (``error``, a ``ValueError``) that names the file,
and the line where there is one."""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path


def read_text(path: str | Path, error: type[ValueError], expected: str) -> str:
    """The text of the UTF-8 file ``path`` (without a byte-order mark); a missing, binary, non-UTF-8
    or empty file, or a folder, is an ``error`` (an empty one says ``expected``: what the file should
    hold)."""
    path = Path(path)
    if path.is_dir():
        raise error(f"{path}: is a directory, expected a file")
    if not path.is_file():
        raise error(f"{path}: no such file")
    data = path.read_bytes()
    if b"\x00" in data:
        line = data[: data.index(b"\x00")].count(b"\n") + 1
        raise error(f"{path}, line {line}: a NUL byte (a binary file?); expected a UTF-8 text file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as problem:
        line = data[: problem.start].count(b"\n") + 1
        raise error(f"{path}, line {line}: not valid UTF-8 ({problem.reason}); expected a UTF-8 text file") from None
    if not text.strip():
        raise error(f"{path}: the file is empty; expected {expected}")
    return text


MAX_LISTED = 20
"""Rows left out of a file that are named one by one; the rest are counted."""


def skipped_notes(skipped: list[str]) -> list[str]:
    """Notes on the rows left out of a file (``"<file>, line <n>: <why>"`` each): each of the first
    :data:`MAX_LISTED`, then their number.

    >>> skipped_notes(["a.tsv, line 3: 5 fields, expected 6"])
    ['left out a.tsv, line 3: 5 fields, expected 6', '1 row left out']
    """
    if not skipped:
        return []
    more = f" ({len(skipped) - MAX_LISTED} not listed)" if len(skipped) > MAX_LISTED else ""
    rows = "row" if len(skipped) == 1 else "rows"
    return [*(f"left out {row}" for row in skipped[:MAX_LISTED]), f"{len(skipped)} {rows} left out{more}"]


def check_header(path: Path, names: Sequence[str], error: type[ValueError]) -> None:
    """Refuse a header (line 1 of ``path``) that names a column twice."""
    duplicated = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicated:
        raise error(f"{path}, line 1: duplicated columns {duplicated}")


def read_csv(path: str | Path, error: type[ValueError], expected: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The column names of the CSV file ``path`` (its first line that is not blank) and its rows,
    each with its line number, blank lines left out. The file is read with :func:`read_text`
    (``expected``: what it should hold); duplicated columns, a row with another number of fields
    than the header and a file without rows are an ``error``."""
    path = Path(path)
    # lines end at \n, \r\n or \r only: str.splitlines would also cut fields at a form feed or U+2028
    reader = csv.reader(io.StringIO(read_text(path, error, expected), newline=""))
    try:
        header = next((fields for fields in reader if any(field.strip() for field in fields)), None)
        if header is None:
            raise error(f"{path}: no column names; expected {expected}")
        names = [name.strip() for name in header]
        check_header(path, names, error)
        rows = []
        for fields in reader:
            if any(field.strip() for field in fields):
                if len(fields) != len(names):
                    raise error(f"{path}, line {reader.line_num}: {len(fields)} fields, expected {len(names)} (the "
                                "header's columns)")  # fmt: skip
                rows.append((reader.line_num, fields))
    except csv.Error as problem:  # a field longer than the csv module's limit (131,072 characters)
        raise error(f"{path}, line {reader.line_num}: {problem}; expected comma-separated fields") from None
    if not rows:
        raise error(f"{path}: a header but no rows; expected one row per time step")
    return names, rows


def parse_number(text: str, where: str, column: str, error: type[ValueError]) -> float:
    """The finite number a field holds, or an ``error`` naming ``where`` it is (the file and line)
    and its ``column``.

    >>> parse_number("2.5e3", "data.csv, line 2", "load", ValueError)
    2500.0
    >>> parse_number("nan", "data.csv, line 3", "load", ValueError)
    Traceback (most recent call last):
    ...
    ValueError: data.csv, line 3, column 'load': expected a finite number, got 'nan'
    """
    try:
        value = float(text)
    except ValueError:
        raise error(f"{where}, column {column!r}: expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise error(f"{where}, column {column!r}: expected a finite number, got {text!r}")
    return value
