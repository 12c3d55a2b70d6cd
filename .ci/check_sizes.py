"""House rule: no source file over 500 lines, no function over 80 lines (package, tests, benchmarks)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 80


def problems(root: Path) -> list[str]:
    found = []
    for path in sorted(p for folder in ("neurodrive", "tests", "benchmarks", "examples") for p in (root / folder).rglob("*.py")):
        text = path.read_text()
        lines = len(text.splitlines())
        if lines > MAX_FILE_LINES:
            found.append(f"{path.relative_to(root)}: {lines} lines (at most {MAX_FILE_LINES})")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    found.append(f"{path.relative_to(root)}:{node.lineno}: {node.name}() is {length} lines (at most {MAX_FUNCTION_LINES})")
    return found


if __name__ == "__main__":
    issues = problems(Path(__file__).resolve().parents[1])
    print("\n".join(issues) if issues else "sizes: every file <= 500 lines, every function <= 80 lines")
    sys.exit(1 if issues else 0)
