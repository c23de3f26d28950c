"""Kraken's RFC 3339 timestamps: the fast path (the second's value cached by the text up to the ``.``)
gives what the general parse gives, for every shape, whichever shapes came before it."""

from __future__ import annotations

import itertools

from marketfeed.adapters.kraken.adapter import _rfc3339_slow, rfc3339_ns

SHAPES = [
    "2023-10-06T17:35:55.440295Z",  # Kraken's own shape
    "2023-10-06T17:35:55.000001Z",
    "2023-10-06T17:35:56.440295Z",  # the next second
    "2023-10-06T17:35:55Z",  # no fraction
    "2023-10-06T17:35:55.44Z",
    "2023-10-06T17:35:55.4402951Z",  # 7 digits: 27 characters without the Z at 26
    "2023-10-06T17:35:55.440295z",
    "2023-10-06t17:35:55.440295Z",
    "2023-10-06T17:35:55x440295Z",  # 27 characters, no "." at 19
    "2023-10-06T17:35:55.44029xZ",
    "2023-10-06T17:35:55.440295Z ",
    "2023-10-06T17:35:55.440295ZZ",
    "2023-10-06T17:35:55.",
    "2023-10-06T17:35:55",
    "not a time at all, 27 chars",
]


def test_fast_path_equals_the_general_parse_in_any_order() -> None:
    for order in itertools.permutations(SHAPES[:6]):
        for text in order + tuple(SHAPES):
            assert rfc3339_ns(text) == _rfc3339_slow(text), text
    assert rfc3339_ns("2023-10-06T17:35:55.440295Z") == 1_696_613_755_440_295_000
