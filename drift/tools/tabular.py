"""Reading the small tables the tools take (``drift calibrate``, ``drift gate``): CSV or JSONL.

A path (or ``-`` for stdin) is opened as UTF-8 (a byte-order mark is skipped); ``.csv`` is CSV,
``.jsonl``/``.ndjson``/``.json`` is JSON Lines, and anything else is told apart by its first
non-blank character (``{``: JSON Lines). Errors are one line, raised as the caller's exception
class, naming the file and line.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
from collections.abc import Iterable, Iterator
from typing import IO, Any

__all__ = ["JSONL_EXT", "open_lines", "jsonl_rows"]

JSONL_EXT = (".jsonl", ".ndjson", ".json")


def open_lines(path: str, error: type[Exception]) -> tuple[Iterator[str], str, IO[str] | None]:
    """Lines of the input and its format (``csv``/``jsonl``); the file to close, if any."""
    if path == "-":
        handle: IO[str] | None = None
        stream: IO[str] = sys.stdin
        ext = ""
    else:
        try:
            handle = open(path, encoding="utf-8-sig", newline="")
        except FileNotFoundError:
            raise error(f"{path}: no such file") from None
        except IsADirectoryError:
            raise error(f"{path}: is a directory") from None
        except OSError as exc:
            raise error(f"{path}: cannot read ({exc.strerror})") from None
        stream = handle
        ext = os.path.splitext(path)[1].lower()
    if ext == ".csv":
        return iter(stream), "csv", handle
    if ext in JSONL_EXT:
        return iter(stream), "jsonl", handle
    head: list[str] = []
    for line in stream:  # sniff: the first non-blank character
        head.append(line)
        if line.strip():
            break
    fmt = "jsonl" if head and head[-1].lstrip().startswith("{") else "csv"
    return itertools.chain(head, stream), fmt, handle


def jsonl_rows(lines: Iterable[str], where: str, error: type[Exception]) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` of every non-blank line; a line that is not a JSON object is an error."""
    for line_no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise error(f"{where}, line {line_no}: invalid JSON ({exc.msg}, column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise error(f"{where}, line {line_no}: not a JSON object")
        yield line_no, obj
