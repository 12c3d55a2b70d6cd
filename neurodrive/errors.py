"""Error types that name the offending file and field."""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """Bad input data: names the file and the field so the user can fix it.

    The message reads ``<file>: field '<field>': <problem>``.
    """

    def __init__(self, file: str | Path, field: str | None, problem: str) -> None:
        self.file = str(file)
        self.field = field
        self.problem = problem
        where = f"{self.file}: field '{field}'" if field else self.file
        super().__init__(f"{where}: {problem}")
