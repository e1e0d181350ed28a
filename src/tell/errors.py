"""The one user-facing error type.

Anything the user can fix (a bad file, a wrong flag, a budget the data cannot meet) raises `TellError`.
The CLI prints it as one line and exits with code 2; `--debug` shows the traceback instead.
"""

from __future__ import annotations


class TellError(Exception):
    """A problem the user can act on. The message is one line: where, what field, what was expected."""

    exit_code = 2

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None):
        self.file, self.line, self.field = file, line, field
        where = ""
        if file is not None:
            where = f"{file}:{line}: " if line is not None else f"{file}: "
        what = f"field '{field}': " if field is not None else ""
        super().__init__(f"{where}{what}{message}".replace("\n", " "))
