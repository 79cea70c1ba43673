"""Measuring how deeply a JSON text nests, before parsing it.

Python's JSON reader recurses once per level of nesting, in C: a body of a million
brackets exhausts a thread's stack (a segfault, not an exception) before the recursion
limit can stop it, depending on the thread's stack size. So untrusted JSON (request
bodies, safetensors headers) is measured first, which costs two passes in C and one
Python step per bracket.
"""

from __future__ import annotations

import itertools
import re

_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def nests_deeper_than(data: bytes, depth_max: int) -> bool:
    """Whether arrays and objects in `data` nest more than `depth_max` levels deep
    (brackets inside strings do not count; malformed JSON is left to the parser)."""
    if data.count(b"[") + data.count(b"{") <= depth_max:
        return False
    brackets = _JSON_STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    return max(itertools.accumulate(_STEP[b] for b in brackets), default=0) > depth_max
