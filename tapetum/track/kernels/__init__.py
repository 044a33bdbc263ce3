"""Compiled per-frame tracker cores (numba).

A tracker's frame on a few dozen objects is a few hundred small array operations; in
numpy each costs a microsecond of interpreter and dispatch overhead, more than the
arithmetic. Here each tracker's whole frame (prediction, cost matrices, assignment,
Kalman correction, track birth and death) is one compiled call over a fixed-capacity
structure of arrays.

Importing this package imports numba (about half a second), so the trackers import it
on construction, not at ``import tapetum``. Compiled code is cached on disk next to the
sources (``cache=True``); the first tracker built on a fresh install compiles for a few
seconds.
"""
