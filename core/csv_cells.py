"""Cells of the CSV files ModelForge writes (a batch job's result as CSV, the admin's export of
the prediction history), made safe to open in a spreadsheet.

A spreadsheet runs a cell whose text starts with ``=``, ``+``, ``-`` or ``@`` as a formula, and
some also one that starts with a tab, a carriage return or NUL ("CSV injection", OWASP; ASVS 5
requirement 1.2.10); Excel in East Asian locales reads the full-width ``＝ ＋ － ＠`` the same way.
Output values, output names, map keys and key names come from uploaded models and clients, so
any text cell, header names included, may be hostile. Such a cell is written with a leading
single quote, which spreadsheets take as "text follows" and do not show.

A number stays a number. A finite int or float, or a text that is exactly a decimal literal
(``-1.5``, ``+2``, ``-3.5e-05``), is never a formula: a spreadsheet reads ``-1.5`` as minus one
and a half, and a CSV reader as the float it is. So numeric columns, negative values included,
are written unchanged, while anything else with such a first character (``-1+1``, ``-inf``,
``@SUM(A1)``) gets the quote. (defusedcsv covers neither tab nor carriage return, and quotes
numbers in exponent form, hence this small function.)
"""

from __future__ import annotations

import math
import re

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\0", "＝", "＋", "－", "＠")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def csv_cell(value: object) -> object:
    """``value`` as csv.writer should get it: None as an empty cell, numbers as they are, and
    text that a spreadsheet would run as a formula behind a single quote."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and math.isfinite(value):
        return value
    text = value if isinstance(value, str) else str(value)
    if text.startswith(FORMULA_PREFIXES) and not _NUMBER.fullmatch(text):
        return "'" + text
    return text


def csv_row(values) -> list[object]:
    """Every cell of a row (a header row too) through csv_cell."""
    return [csv_cell(value) for value in values]
