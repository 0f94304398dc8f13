"""The Pareto front of a set of objective vectors (every component minimised).

A point is on the front when no other point is at least as good in every
objective and better in one. Points with equal vectors do not dominate each
other, so ties are all on the front: the front is a property of the set of
vectors, the same whatever order the points come in.

Sorting lexicographically first means a point can only be dominated by one
sorted before it, and (dominance being transitive) by one already on the
front: O(n log n) for two objectives (a running minimum) and three (a
staircase), O(n x front) for more; 100,000 points take about a second.
"""
from __future__ import annotations


def dominates(a, b) -> bool:
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def front(vectors: list) -> list[int]:
    """Indices (into ``vectors``) of the points on the front, in increasing order."""
    order = sorted(range(len(vectors)), key=lambda i: vectors[i])
    if vectors and len(vectors[0]) == 2:
        return sorted(_front2(vectors, order))
    if vectors and len(vectors[0]) == 3:
        return sorted(_front3(vectors, order))
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


def _front3(vectors, order) -> list[int]:
    """Three objectives, O(n log n) comparisons: by groups of equal first
    objective, in order. A point is on the front when it is on its group's
    two-objective front and no earlier group holds a point at least as good
    in the other two (a staircase of the earlier groups' (b, c) minima: b up,
    c down, so the least c among b' <= b is one bisection away). Without it,
    "+width, +depth, macs" over 90,000 points, nearly all on the front,
    would be 4 x 10^9 comparisons."""
    import bisect
    kept: list[int] = []
    stair_b: list = []
    stair_c: list = []

    def least_c(b):
        i = bisect.bisect_right(stair_b, b)
        return stair_c[i - 1] if i else None

    start = 0
    while start < len(order):
        end = start
        while end < len(order) and vectors[order[end]][0] == vectors[order[start]][0]:
            end += 1
        group = order[start:end]
        pairs = [vectors[i][1:] for i in group]
        for j in _front2(pairs, sorted(range(len(group)), key=lambda j: pairs[j])):
            b, c = pairs[j]
            best = least_c(b)
            if best is None or best > c:
                kept.append(group[j])
        for b, c in pairs:           # the group joins the staircase for the next ones
            best = least_c(b)
            if best is not None and best <= c:
                continue
            i = bisect.bisect_left(stair_b, b)
            k = i
            while k < len(stair_b) and stair_c[k] >= c:
                k += 1               # points the new one dominates (or equals in b)
            stair_b[i:k] = [b]
            stair_c[i:k] = [c]
        start = end
    return kept


def brute_front(vectors: list) -> list[int]:
    """The definition, O(n^2): for tests."""
    return [i for i, v in enumerate(vectors)
            if not any(dominates(w, v) for j, w in enumerate(vectors) if j != i)]
