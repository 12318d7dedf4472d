"""Text that comes from data (class names, file names, config values, error messages), made
safe for where it goes: a terminal, a CSV cell, an error line. A bottom module every layer uses.

- Terminals: Rich reads `[...]` as markup (a title `run [val, best]` would lose its brackets),
  and control characters (ESC sequences) would drive the terminal. `for_console` escapes both;
  `one_line` makes any text one printable line.
- CSV: a cell starting with `=`, `+`, `-` or `@` (or a tab or carriage return) is a formula
  to a spreadsheet (OWASP "CSV injection"); `csv_cell` prefixes it with `'` unless it is a
  plain number.
- Credentials: `mask_credentials` hides the password of any URL-like `user:password@host`
  (with or without a scheme) and of `password=...` query parameters.
"""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")
# user:password@host, after a scheme:// or at the start of a word; the password (up to the last @) has no / or space
_USERINFO = re.compile(r"((?:[A-Za-z][A-Za-z0-9+.-]*://|(?<![\w:/@.-]))[^\s:/@'\"]+):([^\s/'\"]+)@(?=[\w.\[-])")
_QUERY_SECRET = re.compile(r"([?&;][^=&\s]*(?:pass|secret|token)[^=&\s]*=)[^&\s'\"]*", re.I)


def _visible(match: re.Match) -> str:
    return f"\\x{ord(match.group()):02x}"


def one_line(text) -> str:
    """`text` as one printable line: newlines and tabs become spaces, other control characters
    visible escapes (`\\x1b`)."""
    text = str(text).replace("\r\n", " ").replace("\n", " ").replace("\r", " ").replace("\t", " ")
    return _CONTROL.sub(_visible, text)


def for_console(text) -> str:
    """`text` for a Rich console or table: no markup, no control characters."""
    from rich.markup import escape

    return escape(one_line(text))


def csv_cell(value):
    """A CSV cell that a spreadsheet shows as text: strings that would start a formula get a
    leading `'` (numbers, also negative ones, stay as they are). Non-strings pass through."""
    if isinstance(value, str) and value.startswith(_FORMULA_START) and not _NUMBER.match(value):
        return "'" + value
    return value


def csv_text(rows) -> str:
    """CSV text of `rows` (lists of cells), every cell through `csv_cell`."""
    import csv
    import io

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for row in rows:
        writer.writerow([csv_cell(cell) for cell in row])
    return out.getvalue()


def mask_credentials(text) -> str:
    """`text` with the password of every `user:password@host` and `password=` parameter as ***."""
    text = _USERINFO.sub(r"\1:***@", str(text))
    return _QUERY_SECRET.sub(r"\1***", text)
