"""Who gets which arm: a stable hash any client can reproduce.

The bucket of a person in an experiment is GrowthBook's hash version 2 (FNV-1a 32-bit over
the characters of salt + person key, hashed again over its decimal digits, modulo 10,000, over
10,000), so a JavaScript or mobile SDK given the same salt and key computes the same bucket.
Arms take consecutive ranges of [0, 1) in the order declared, each as wide as its weight.
"""

from __future__ import annotations

from collections.abc import Sequence

FNV_OFFSET = 0x811C9DC5
FNV_PRIME = 0x01000193


def fnv1a32(text: str) -> int:
    """FNV-1a, 32 bits, over the string's code points (GrowthBook's SDKs do the same)."""
    value = FNV_OFFSET
    for char in text:
        value = ((value ^ ord(char)) * FNV_PRIME) & 0xFFFFFFFF
    return value


def bucket(salt: str, key: str) -> float:
    """The person's position in [0, 1) for this experiment (GrowthBook hash v2)."""
    return (fnv1a32(str(fnv1a32(salt + key))) % 10_000) / 10_000


def arm_index(position: float, weights: Sequence[float]) -> int:
    """The arm whose range holds the position: [0, w0), [w0, w0 + w1), ... (the last range
    is closed at 1 against rounding)."""
    edge = 0.0
    for index, weight in enumerate(weights):
        edge += weight
        if position < edge:
            return index
    return len(weights) - 1
