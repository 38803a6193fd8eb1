"""One log record, one line: values from requests and files cannot forge log lines.

URLs, expressions and error messages logged by the backend and the CLI come from outside; a CR or
LF in them would start what reads as a new record. SingleLineFormatter escapes every control
character of the message (as \\r, \\n, \\x00, …) and indents each line of a traceback, so a line
that starts at column 0 is always the start of a genuine record.
"""

from __future__ import annotations

import logging
import re
import sys

_CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_TRACEBACK_INDENT = "    "


def escape_control_characters(text: str) -> str:
    """`text` with each control character (C0, DEL, C1, line and paragraph separators) escaped."""
    return _CONTROL_CHARACTERS.sub(
        lambda match: _NAMED_ESCAPES.get(match.group(), f"\\x{ord(match.group()):02x}")
        if ord(match.group()) < 0x100
        else f"\\u{ord(match.group()):04x}",
        text,
    )


class SingleLineFormatter(logging.Formatter):
    """A Formatter whose messages are one line and whose tracebacks are indented under them."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        """The formatted record with its message escaped (Formatter.format sets record.message)."""
        record.message = escape_control_characters(record.message)
        return super().formatMessage(record)

    def formatException(self, exc_info) -> str:  # noqa: N802 (logging's name)
        """The traceback, every line indented and escaped, so that none can pass for a record."""
        return _indented(super().formatException(exc_info))

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 (logging's name)
        """The stack, every line indented and escaped."""
        return _indented(super().formatStack(stack_info))


def _indented(block: str) -> str:
    return "\n".join(_TRACEBACK_INDENT + escape_control_characters(line) for line in block.split("\n"))


def configure_logging(line_format: str, level: int | str | None = None) -> None:
    """Like logging.basicConfig(format=line_format, level=level, stream=sys.stderr), with
    SingleLineFormatter: does nothing when the root logger has handlers already."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(SingleLineFormatter(line_format))
    root.addHandler(handler)
    if level is not None:
        root.setLevel(level)
