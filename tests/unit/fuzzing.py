"""Fuzzing for the compiled readers' tests: texts a few random edits away from valid ones."""

from __future__ import annotations

import random


def mutated(rng: random.Random, text: str, alphabet: str) -> str:
    """``text`` with one to three characters replaced, deleted or inserted from ``alphabet``."""
    chars = list(text)
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(chars))
        op = rng.random()
        if op < 0.4:
            chars[at] = rng.choice(alphabet)
        elif op < 0.7:
            del chars[at]
        else:
            chars.insert(at, rng.choice(alphabet))
    return "".join(chars)
