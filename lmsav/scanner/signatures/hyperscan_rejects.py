"""Finding the expression Hyperscan refuses among many compiled together."""

from __future__ import annotations

from collections.abc import Callable

import hyperscan


def first_rejected(ids: list[int], build: Callable[[list[int]], object]) -> int | None:
    """Bisect to one id whose expression fails to compile on its own, or None when every half
    compiles (the expressions are refused only together); ``build`` compiles the expressions
    of the given ids and raises hyperscan.error when Hyperscan refuses them."""
    while len(ids) > 1:
        half = len(ids) // 2
        left = ids[:half]
        try:
            build(left)
            ids = ids[half:]
        except hyperscan.error:
            ids = left
    try:
        build(ids)
    except hyperscan.error:
        return ids[0]
    return None
