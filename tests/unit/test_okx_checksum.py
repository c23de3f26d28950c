"""The OKX checksum (EXCHANGES.md 5.7) against the documented vectors, and the adapter's fast
fragment form against the reference form."""

import random
import zlib

from marketfeed.adapters.okx.checksum import (
    checksum_of_fragments,
    okx_checksum,
    signed32,
)


def test_documented_vector_both_sides():
    # bids 3366.1/7, 3366/6; asks 3366.8/9, 3368/8 -> "3366.1:7:3366.8:9:3366:6:3368:8"
    assert okx_checksum([("3366.1", "7"), ("3366", "6")], [("3366.8", "9"), ("3368", "8")]) == -1881014294


def test_documented_vector_bids_run_out():
    # one bid: its missing entries are skipped -> "3366.1:7:3366.8:9:3368:8:3372:8"
    assert okx_checksum([("3366.1", "7")], [("3366.8", "9"), ("3368", "8"), ("3372", "8")]) == 831078360


def test_vector_strings_are_what_the_doc_says():
    assert signed32(zlib.crc32(b"3366.1:7:3366.8:9:3366:6:3368:8")) == -1881014294
    assert signed32(zlib.crc32(b"3366.1:7:3366.8:9:3368:8:3372:8")) == 831078360


def test_v5_doc_sample_message_checksum_does_not_match_its_levels():
    # EXCHANGES.md 5.7 warns: the v5 docs' sample books message carries checksum -855196043, but its
    # levels hash to -2102840145. Our function agrees with the recomputed value, not the sample's.
    asks = [("8476.98", "415"), ("8477", "7"), ("8477.34", "85"), ("8477.56", "1"), ("8505.84", "8"),
            ("8506.37", "85"), ("8506.49", "2"), ("8506.96", "100")]
    bids = [("8476.97", "256"), ("8475.55", "101"), ("8475.54", "100"), ("8475.3", "1"), ("8447.32", "6"),
            ("8447.02", "246"), ("8446.83", "24"), ("8446", "95")]
    assert okx_checksum(bids, asks) == -2102840145
    assert okx_checksum(bids, asks) != -855196043


def test_exact_text_matters():
    assert okx_checksum([("3366", "6")], []) != okx_checksum([("3366.0", "6")], [])


def test_only_top_25_count():
    bids = [(str(1000 - i), "1") for i in range(40)]
    asks = [(str(2000 + i), "2") for i in range(40)]
    assert okx_checksum(bids, asks) == okx_checksum(bids[:25], asks[:25])
    assert okx_checksum(bids, asks) != okx_checksum(bids[:24], asks[:25])


def test_signed_range():
    assert signed32(0xFFFFFFFF) == -1
    assert signed32(0x7FFFFFFF) == 0x7FFFFFFF
    assert signed32(0x80000000) == -(2**31)


def test_fragments_form_equals_reference_for_uneven_sides():
    rng = random.Random(7)
    for _ in range(300):
        nb, na = rng.randint(0, 30), rng.randint(0, 30)
        bids = [(f"{100 - i * 0.5:g}", f"{rng.randint(1, 999) / 100:g}") for i in range(nb)]
        asks = [(f"{101 + i * 0.5:g}", f"{rng.randint(1, 999) / 100:g}") for i in range(na)]
        frags_b = [f"{p}:{s}" for p, s in bids[:25]]
        frags_a = [f"{p}:{s}" for p, s in asks[:25]]
        assert checksum_of_fragments(frags_b, frags_a) == okx_checksum(bids, asks)


def test_unsigned_form_matches_the_venue_value_masked():
    from marketfeed.adapters.okx.checksum import crc_of_fragments

    frags_b, frags_a = ["3366.1:7", "3366:6"], ["3366.8:9", "3368:8"]
    assert crc_of_fragments(frags_b, frags_a) == -1881014294 & 0xFFFFFFFF
    full_b = [f"{100 - i}:1" for i in range(25)]
    full_a = [f"{200 + i}:2" for i in range(25)]
    assert crc_of_fragments(full_b, full_a) == okx_checksum([f.split(":") for f in full_b], [f.split(":") for f in full_a]) & 0xFFFFFFFF


def test_c_checksum_equals_zlib_and_the_python_form():
    """marketfeed/_checksum.c (its own CRC-32, eight bytes at a time) against zlib.crc32 on the same
    text, for every length around the 8-byte steps, both sides running out, depths and non-ASCII."""
    import pytest
    from marketfeed.adapters.okx.checksum import _crc_of_top_py

    c_checksum = pytest.importorskip("marketfeed._checksum", reason="C checksum not built (no compiler at install)")
    crc = c_checksum.crc32_interleaved
    assert crc(["3366:6", "3366.1:7"], ["3366.8:9", "3368:8"], 25) == -1881014294 & 0xFFFFFFFF
    rng = random.Random(3)
    for _ in range(3000):
        bids = ["".join(rng.choice("0123456789.:é") for _ in range(rng.randint(0, 20))) for _ in range(rng.randint(0, 30))]
        asks = ["".join(rng.choice("0123456789.") for _ in range(rng.randint(0, 20))) for _ in range(rng.randint(0, 30))]
        depth = rng.choice([0, 1, 5, 25, 40])
        expected = _crc_of_top_py(bids, asks, depth)
        assert crc(bids, asks, depth) == expected
        best_b, best_a = bids[::-1][:depth], asks[:depth]
        parts = [x for pair in zip(best_b, best_a) for x in pair] + best_b[len(best_a):] + best_a[len(best_b):]
        assert expected == zlib.crc32(":".join(parts).encode())
    with pytest.raises(TypeError):
        crc([b"1:2"], [], 25)
