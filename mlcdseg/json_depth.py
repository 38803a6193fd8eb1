"""A guard against JSON nested so deep that parsing it exhausts memory or the stack.

A 200 KB file of 100,000 "[" took ijson 18 GB (it keeps the path to every value as a string
that grows with the depth); json.load gives up with a RecursionError. DepthLimitedReader sits
between the file and the parser and refuses the bytes before the parser sees them.
"""

from __future__ import annotations

import re
from typing import BinaryIO

from mlcdseg.errors import NestingTooDeepError

#: Deepest nesting read from a file we did not write (the outermost array or object is level 1).
#: Label Studio exports and COCO instances files nest less than 10 deep.
MAX_NESTING_DEPTH = 64


class DepthLimitedReader:
    """A binary reader that passes a JSON stream through and raises NestingTooDeepError before
    handing out bytes that open more than `max_depth` nested arrays or objects.

    Only quotes, backslashes and brackets are looked at (by a regular expression, so in C): a
    mask's RLE, the bulk of an export, is digits and commas. Brackets inside strings do not count.
    """

    _TOKENS = re.compile(rb'["\\\[\]{}]')

    def __init__(self, stream: BinaryIO, max_depth: int) -> None:
        self._stream = stream
        self._max_depth = max_depth
        self._depth = 0
        self._in_string = False
        self._escaped_until = 0  # bytes before this offset of the chunk are escaped (by a backslash)

    def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes of the stream, checked."""
        data = self._stream.read(size)
        escaped_until, self._escaped_until = self._escaped_until, 0
        for token in self._TOKENS.finditer(data):
            position = token.start()
            if position < escaped_until:
                continue
            byte = data[position]
            if byte == 0x5C:  # a backslash escapes the next byte, which may start the next chunk
                escaped_until = position + 2
                self._escaped_until = max(escaped_until - len(data), 0)
            elif byte == 0x22:  # '"'
                self._in_string = not self._in_string
            elif self._in_string:
                continue
            elif byte in b"[{":
                self._depth += 1
                if self._depth > self._max_depth:
                    raise NestingTooDeepError(f"is nested deeper than {self._max_depth} levels")
            else:
                self._depth -= 1
        return data
