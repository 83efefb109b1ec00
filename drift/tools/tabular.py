"""Reading the small tables the tools take (``drift calibrate``, ``drift gate``): CSV or JSONL.

A path (or ``-`` for stdin) is opened as UTF-8 (a byte-order mark is skipped); ``.csv`` is CSV,
``.jsonl``/``.ndjson``/``.json`` is JSON Lines, and anything else is told apart by its first
non-blank character (``{``: JSON Lines). Errors are one line, raised as the caller's exception
class, naming the file and line; bytes that are not UTF-8 are such an error too (naming the line,
except on a stdin that decodes strictly: it fails a whole read-ahead block at once).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
from collections.abc import Iterable, Iterator
from typing import IO, Any

__all__ = ["JSONL_EXT", "open_lines", "jsonl_rows"]

JSONL_EXT = (".jsonl", ".ndjson", ".json")

_UNDECODED = re.compile("[\udc80-\udcff]")  # what errors="surrogateescape" makes of a byte that is not UTF-8


def _utf8_lines(stream: IO[str], where: str, error: type[Exception]) -> Iterator[str]:
    """The stream's lines; a byte that is not UTF-8 is ``error`` naming ``where`` and the line.

    A file is opened with ``errors="surrogateescape"``, so such a byte arrives as a lone surrogate
    on its own line (a strict decoder fails a whole read-ahead block earlier, at no known line).
    """
    line_no = 0
    try:
        for line in stream:
            line_no += 1
            if not line.isascii() and (bad := _UNDECODED.search(line)):
                raise error(f"{where}, line {line_no}: not UTF-8 text (byte 0x{ord(bad.group()) - 0xDC00:02x}, "
                            f"column {bad.start() + 1}); save it as UTF-8")
            yield line
    except UnicodeDecodeError as exc:
        raise error(f"{where}: not UTF-8 text ({exc.reason}: byte 0x{exc.object[exc.start]:02x}); "
                    "give UTF-8") from None


def open_lines(path: str, error: type[Exception]) -> tuple[Iterator[str], str, IO[str] | None]:
    """Lines of the input and its format (``csv``/``jsonl``); the file to close, if any."""
    if path == "-":
        handle: IO[str] | None = None
        raw: IO[str] = sys.stdin
        ext = ""
    else:
        try:
            handle = open(path, encoding="utf-8-sig", errors="surrogateescape", newline="")
        except FileNotFoundError:
            raise error(f"{path}: no such file") from None
        except IsADirectoryError:
            raise error(f"{path}: is a directory") from None
        except OSError as exc:
            raise error(f"{path}: cannot read ({exc.strerror})") from None
        raw = handle
        ext = os.path.splitext(path)[1].lower()
    stream = _utf8_lines(raw, "<stdin>" if path == "-" else path, error)
    if ext == ".csv":
        return stream, "csv", handle
    if ext in JSONL_EXT:
        return stream, "jsonl", handle
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
