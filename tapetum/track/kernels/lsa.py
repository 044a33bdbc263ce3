"""Linear assignment for compiled tracker code.

``lap`` and ``scipy`` solve assignment in C, but only behind a Python call: about 20 µs
for a 10 x 12 matrix with ``lap.lapjv(extend_cost=True, cost_limit=...)``, three times a
frame, which is more than the rest of a compiled ByteTrack frame. The trackers' kernels
therefore solve assignment in-line with the shortest augmenting path method (Jonker &
Volgenant 1987, in the rectangular form of Crouse, "On implementing 2D rectangular
assignment algorithms", IEEE TAES 2016, the method behind
``scipy.optimize.linear_sum_assignment``). The tests check every result against ``lap``
and ``scipy`` on random and tracking-shaped matrices.

Two problems are solved:

* :func:`min_cost_matching`: every row or every column is matched (whichever is fewer),
  with the least total cost; OC-SORT's association.
* :func:`thresholded_matching`: ``lap.lapjv(cost, extend_cost=True, cost_limit=limit)``:
  a pair is matched only if that lowers the total against leaving both unmatched at
  ``limit / 2`` each, so no pair costing ``limit`` or more is matched; ByteTrack's and
  BoT-SORT's association. Tracking costs are sparse (a track overlaps few detections),
  so the pairs below ``limit`` are split into connected components and each is solved
  on its own: exact, and a crowded frame becomes many tiny problems.
"""

from __future__ import annotations

import numpy as np

from tapetum._types import Float64Array, IntArray
from tapetum.track.kernels.jit import njit


@njit
def _augment_all_rows(cost: Float64Array) -> IntArray:
    """Shortest-augmenting-path assignment of an (n, m) matrix with ``n <= m``.

    Returns ``col4row`` (n,): the column of every row. Entries must be finite.
    """
    n, m = cost.shape
    u = np.zeros(n)
    v = np.zeros(m)
    shortest = np.empty(m)
    path = np.full(m, -1, np.int64)
    col4row = np.full(n, -1, np.int64)
    row4col = np.full(m, -1, np.int64)
    seen_row = np.zeros(n, np.bool_)
    seen_col = np.zeros(m, np.bool_)
    remaining = np.empty(m, np.int64)
    for cur_row in range(n):
        # Dijkstra over the reduced costs from cur_row to the nearest free column.
        for it in range(m):
            remaining[it] = m - it - 1
        num_remaining = m
        seen_row[:] = False
        seen_col[:] = False
        shortest[:] = np.inf
        min_val = 0.0
        i = cur_row
        sink = -1
        while sink == -1:
            index = -1
            lowest = np.inf
            seen_row[i] = True
            base = min_val - u[i]
            for it in range(num_remaining):
                j = remaining[it]
                r = base + cost[i, j] - v[j]
                if r < shortest[j]:
                    path[j] = i
                    shortest[j] = r
                # Prefer a free column among equals: it ends the search sooner.
                if shortest[j] < lowest or (shortest[j] == lowest and row4col[j] == -1):
                    lowest = shortest[j]
                    index = it
            min_val = lowest
            j = remaining[index]
            if row4col[j] == -1:
                sink = j
            else:
                i = row4col[j]
            seen_col[j] = True
            num_remaining -= 1
            remaining[index] = remaining[num_remaining]
        # Dual update keeps reduced costs non-negative, then flip the path.
        u[cur_row] += min_val
        for r_i in range(n):
            if seen_row[r_i] and r_i != cur_row:
                u[r_i] += min_val - shortest[col4row[r_i]]
        for c_j in range(m):
            if seen_col[c_j]:
                v[c_j] -= min_val - shortest[c_j]
        j = sink
        while True:
            i = path[j]
            row4col[j] = i
            previous = col4row[i]
            col4row[i] = j
            j = previous
            if i == cur_row:
                break
    return col4row


@njit
def min_cost_matching(cost: Float64Array) -> tuple[IntArray, IntArray]:
    """Least-total-cost matching of ``min(n, m)`` pairs of an (n, m) finite matrix.

    Returns:
        ``row_to_col`` (n,) and ``col_to_row`` (m,), -1 where unmatched.
    """
    n, m = cost.shape
    row_to_col = np.full(n, -1, np.int64)
    col_to_row = np.full(m, -1, np.int64)
    if n == 0 or m == 0:
        return row_to_col, col_to_row
    if n <= m:
        col4row = _augment_all_rows(np.ascontiguousarray(cost))
        for i in range(n):
            row_to_col[i] = col4row[i]
            col_to_row[col4row[i]] = i
    else:
        row4col = _augment_all_rows(np.ascontiguousarray(cost.T))
        for j in range(m):
            col_to_row[j] = row4col[j]
            row_to_col[row4col[j]] = j
    return row_to_col, col_to_row


@njit
def _find(parent: IntArray, x: int) -> int:
    root = x
    while parent[root] != root:
        root = parent[root]
    while parent[x] != root:  # path compression
        nxt = parent[x]
        parent[x] = root
        x = nxt
    return root


@njit
def thresholded_matching(cost: Float64Array, limit: float) -> tuple[IntArray, IntArray]:
    """``lap.lapjv(cost, extend_cost=True, cost_limit=limit)`` of an (n, m) matrix.

    Leaving a row and a column unmatched costs ``limit``; the matching minimises the
    total, so only pairs costing less than ``limit`` can be matched.

    Returns:
        ``row_to_col`` (n,) and ``col_to_row`` (m,), -1 where unmatched.
    """
    n, m = cost.shape
    row_to_col = np.full(n, -1, np.int64)
    col_to_row = np.full(m, -1, np.int64)
    if n == 0 or m == 0:
        return row_to_col, col_to_row
    # Union rows (0..n-1) and columns (n..n+m-1) joined by a pair below the limit.
    parent = np.arange(n + m)
    degree = np.zeros(n + m, np.int64)
    for i in range(n):
        for j in range(m):
            if cost[i, j] < limit:
                degree[i] += 1
                degree[n + j] += 1
                a = _find(parent, i)
                b = _find(parent, n + j)
                if a != b:
                    parent[b] = a
    # Components in first-seen order; a lone pair needs no solver.
    comp = np.full(n + m, -1, np.int64)
    n_comp = 0
    for x in range(n + m):
        if degree[x] > 0:
            root = _find(parent, x)
            if comp[root] == -1:
                comp[root] = n_comp
                n_comp += 1
            comp[x] = comp[root]
    if n_comp == 0:
        return row_to_col, col_to_row
    rows_in = np.zeros(n_comp, np.int64)
    cols_in = np.zeros(n_comp, np.int64)
    for i in range(n):
        if comp[i] >= 0:
            rows_in[comp[i]] += 1
    for j in range(m):
        if comp[n + j] >= 0:
            cols_in[comp[n + j]] += 1
    rows = np.empty(n, np.int64)
    cols = np.empty(m, np.int64)
    never = 2.0 * abs(limit) + 1.0  # above the dummy cost: never chosen
    for c in range(n_comp):
        nr = 0
        for i in range(n):
            if comp[i] == c:
                rows[nr] = i
                nr += 1
        nc = 0
        for j in range(m):
            if comp[n + j] == c:
                cols[nc] = j
                nc += 1
        if nr == 1 and nc == 1:
            row_to_col[rows[0]] = cols[0]
            col_to_row[cols[0]] = rows[0]
            continue
        # Rows x (columns + one dummy column per row at ``limit``): matching a row to a
        # dummy leaves it unmatched, which beats any pair costing more than ``limit``.
        sub = np.full((nr, nc + nr), limit)
        for a in range(nr):
            for b in range(nc):
                value = cost[rows[a], cols[b]]
                sub[a, b] = value if value < limit else never
        col4row = _augment_all_rows(sub)
        for a in range(nr):
            b = col4row[a]
            if b < nc:
                row_to_col[rows[a]] = cols[b]
                col_to_row[cols[b]] = rows[a]
    return row_to_col, col_to_row
