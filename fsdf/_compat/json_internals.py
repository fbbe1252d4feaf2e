"""The C encoder and scanner under the stdlib's ``json``, used directly because the public calls cost twice as much.

``json.encoder.c_make_encoder`` and ``json.scanner.make_scanner`` are what ``json.dumps``/``json.loads`` end up
in; each public call rebuilds or re-detects around them. Both may be missing (a Python without the C
accelerator): then callers fall back to the public API.
"""
from __future__ import annotations

import json
import json.decoder
import json.encoder
import json.scanner
import re
from typing import Any, Callable, Optional

# ``WHITESPACE.match(text, pos)``: where the JSON whitespace starting at pos ends
# (always matches: the pattern accepts the empty string; WHITESPACE is missing from typeshed)
whitespace_match: Callable[[str, int], re.Match[str]] = json.decoder.WHITESPACE.match  # type: ignore[attr-defined]


def compact_encoder(default: Callable[[Any], Any]) -> Optional[Callable[[Any, int], list[str]]]:
    """The C encoder ``json.dumps(..., ensure_ascii=False, separators=(',', ':'), check_circular=False)`` builds on
    every call, built once; call it as ``''.join(encoder(value, 0))``. None without the C accelerator."""
    make = getattr(json.encoder, 'c_make_encoder', None)
    if make is None:
        return None
    # (markers, default, encoder, indent, key_separator, item_separator, sort_keys, skipkeys, allow_nan)
    encoder: Callable[[Any, int], list[str]] = make(
        None, default, json.encoder.encode_basestring, None, ':', ',', False, False, True)
    return encoder


def scanner() -> Callable[[str, int], tuple[Any, int]]:
    """``scan(text, pos) -> (value, end)``: the scanner ``json.loads`` ends up in (StopIteration if no value)."""
    # typeshed's stub names the scanner class as make_scanner's argument; at run time it is the decoder
    scan: Callable[[str, int], tuple[Any, int]] = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]
    return scan
