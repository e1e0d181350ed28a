"""The one user-facing error type.

Anything the user can fix (a bad file, a wrong flag, a budget the data cannot meet) raises `TellError`.
The CLI prints it as one line and exits with code 2; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import contextlib


class TellError(Exception):
    """A problem the user can act on. The message is one line: where, what field, what was expected."""

    exit_code = 2

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None, record: int | None = None):
        """`line`: a 1-based line of a text file (JSONL, CSV); `record`: a 1-based record of a JSON array,
        Parquet file or Hub data set, where lines mean nothing."""
        self.message, self.file, self.line, self.field, self.record = message, file, line, field, record
        where = ""
        if file is not None:
            where = f"{file}:{line}: " if line is not None else f"{file}: "
            if record is not None:
                where += f"record {record}: "
        what = f"field '{field}': " if field is not None else ""
        super().__init__(f"{where}{what}{message}".replace("\n", " "))

    def located(self, path: str) -> "TellError":
        """The same error in the file `path` (a config checked after it was read): a `file` of None becomes
        `path`, one written as "(part)" becomes "path (part)"; an error naming another file is kept."""
        if self.file is not None and not self.file.startswith("("):
            return self
        file = path if self.file is None else f"{path} {self.file}"
        return TellError(self.message, file=file, line=self.line, field=self.field, record=self.record)


@contextlib.contextmanager
def template_errors(model: str):
    """A chat template that raises (a jinja2 TemplateError: its own `raise_exception`, an undefined name, a syntax
    error) while a command renders examples -> one TellError naming the model's template."""
    from jinja2.exceptions import TemplateError

    try:
        yield
    except TemplateError as e:
        raise TellError(f"the chat template of {model} failed: {type(e).__name__}: {e}; fix the template "
                        "(chat_template.jinja / 'chat_template' in tokenizer_config.json), or remove it to use "
                        "tell's plain template", field="model") from None
