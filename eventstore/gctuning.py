"""Fewer garbage collections for a process that makes many short-lived objects.

Why: ingest, the collector and the simulator allocate a few hundred thousand small dicts and tuples per
simulated hour, nearly all freed by reference counting. CPython's default thresholds (a collection
every 700 net allocations) still traverse them over and over, and each full collection walks every
long-lived object too (a world, the hash memo, stream states): in the demo's ingest that was a quarter
of the CPU. Freezing what exists at the start and collecting less often keeps cyclic garbage bounded
while leaving the CPU to the work.

    with fewer_collections():
        ...  # a batch worker's loop
"""
from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def fewer_collections(threshold: int = 50_000) -> Iterator[None]:
    """Freeze the objects alive now and collect the youngest generation every `threshold` allocations;
    the previous settings come back on exit."""
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(threshold, 20, 100)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


@contextlib.contextmanager
def collections_paused() -> Iterator[None]:
    """No collection while a bounded piece of work runs (one ingest batch): what it allocates is freed by
    reference counting when it returns, so collecting in between only walks the heap (the caller's too:
    a bot's caches, a benchmark's rows) to find nothing. The collector is re-enabled on exit only if this
    call disabled it, so nested or concurrent uses (aiosqlite's worker thread beside the event loop) leave
    it as they found it: enabled unless someone else turned it off."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
