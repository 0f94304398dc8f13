"""The Pareto front of a set of objective vectors (every component minimised).

A point is on the front when no other point is at least as good in every
objective and better in one. Points with equal vectors do not dominate each
other, so ties are all on the front: the front is a property of the set of
vectors, the same whatever order the points come in.

Sorting lexicographically first means a point can only be dominated by one
sorted before it, and (dominance being transitive) by one already on the
front: O(n log n) for two objectives (a running minimum), O(n x front) for
more; 100,000 points of two objectives take well under a second.
"""
from __future__ import annotations


def dominates(a, b) -> bool:
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def front(vectors: list) -> list[int]:
    """Indices (into ``vectors``) of the points on the front, in increasing order."""
    order = sorted(range(len(vectors)), key=lambda i: vectors[i])
    if vectors and len(vectors[0]) == 2:
        return sorted(_front2(vectors, order))
    kept: list[int] = []
    for i in order:
        v = vectors[i]
        if not any(dominates(vectors[j], v) for j in kept):
            kept.append(i)
    return sorted(kept)


def _front2(vectors, order) -> list[int]:
    """Two objectives: in (x, y) order a point is on the front when its y is
    below every y of a smaller x, or it ties the last front point exactly."""
    kept: list[int] = []
    best_y = None          # the least y of the points with a smaller x
    group_x, group_best = None, None
    for i in order:
        x, y = vectors[i]
        if x != group_x:   # a new x: the earlier groups' least y is final
            if group_best is not None:
                best_y = group_best if best_y is None else min(best_y, group_best)
            group_x, group_best = x, y        # sorted: the group's first has its least y
        if y == group_best and (best_y is None or y < best_y):
            kept.append(i)
    return kept


def brute_front(vectors: list) -> list[int]:
    """The definition, O(n^2): for tests."""
    return [i for i, v in enumerate(vectors)
            if not any(dominates(w, v) for j, w in enumerate(vectors) if j != i)]
