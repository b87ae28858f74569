"""Batch orders in which every batch holds both pseudo-classes: a UU risk averages each partial risk over Cp
and over Cn inside a batch, so a batch without one of them has no estimate."""
from __future__ import annotations

import math
import random
from collections.abc import Sequence

from .losses import MissingPseudoClassError


def stratified_order(pseudo_labels: Sequence[int], batch_size: int, seed: int) -> list[int]:
    """Indices ordered so that every consecutive chunk of `batch_size` (the last one too) holds both
    pseudo-classes, each in roughly its overall proportion.

    UU risks average each partial risk over Cp and over Cn within a batch, so a batch without one set has no
    estimate (losses.MissingPseudoClassError). Every item appears at least once. When a class has fewer items
    than there are batches, its items are reused (drawn with replacement) until each batch gets one; a final
    chunk of a single item gets one reused item of the smaller class. The order is a function of `seed` only.
    """
    if batch_size < 2:
        raise ValueError("batch_size must be >= 2 to hold both pseudo-classes")
    rng = random.Random(int(seed))
    positives = [i for i, y in enumerate(pseudo_labels) if y > 0.5]
    negatives = [i for i, y in enumerate(pseudo_labels) if not y > 0.5]
    if not positives or not negatives:
        raise MissingPseudoClassError(
            f"{len(positives)} pseudo-positive and {len(negatives)} pseudo-negative items: "
            "UU training needs both pseudo-classes")
    n_batches = math.ceil(len(pseudo_labels) / batch_size)
    while True:  # reused items add to the total, which may add a batch; converges because batch_size >= 2
        n_pos, n_neg = max(len(positives), n_batches), max(len(negatives), n_batches)
        if (n_pos + n_neg) % batch_size == 1:
            n_pos, n_neg = (n_pos + 1, n_neg) if n_pos <= n_neg else (n_pos, n_neg + 1)
        if math.ceil((n_pos + n_neg) / batch_size) == n_batches:
            break
        n_batches = math.ceil((n_pos + n_neg) / batch_size)
    pos_pool = _shuffled_pool(positives, n_pos, rng)
    neg_pool = _shuffled_pool(negatives, n_neg, rng)
    total = n_pos + n_neg
    sizes = [batch_size] * (n_batches - 1) + [total - batch_size * (n_batches - 1)]
    # One item of each class per batch is reserved; the other positives fill the remaining room in proportion.
    free_pos, room = n_pos - n_batches, total - 2 * n_batches
    order: list[int] = []
    filled_room = placed_pos = 0
    for size in sizes:
        filled_room += size - 2
        target = math.floor(free_pos * filled_room / room + 0.5) if room else 0  # not round(): banker's
        batch_pos = 1 + target - placed_pos
        placed_pos = target
        batch = [pos_pool.pop() for _ in range(batch_pos)] + [neg_pool.pop() for _ in range(size - batch_pos)]
        rng.shuffle(batch)
        order.extend(batch)
    return order


def _shuffled_pool(items: list[int], size: int, rng: random.Random) -> list[int]:
    """All `items` once plus `size - len(items)` reused ones drawn with replacement, shuffled."""
    pool = items + [rng.choice(items) for _ in range(size - len(items))]
    rng.shuffle(pool)
    return pool


def stratified_batches(pseudo_labels: Sequence[int], batch_size: int, seed: int) -> list[list[int]]:
    """`stratified_order` cut into its batches."""
    order = stratified_order(pseudo_labels, batch_size, seed)
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
