"""deep=True: what the walk over grain tables and stream markers adds to a sparse extent."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from ..base import Context
from .codes import GRAIN_COUNT_MISMATCH
from .header import TableLayout
from .section import GrainTables, MarkerWalk, StreamInfo
from .tables import prefetch_directory, tables_from_directory

if TYPE_CHECKING:  # the walk's module loads only for a stream (see sparse.parse_sparse)
    from .markers import MarkerWalker

# --- deep: grain directory, grain tables and stream markers ---------------------------------


class _Deep(NamedTuple):
    """What the deep walk adds to the section and to ``Parsed``."""

    tables: GrainTables | None = None
    markers: MarkerWalk | None = None
    allocated_size: int | None = None


def scan_tables(
    ctx: Context,
    layout: TableLayout | None,
    walk: MarkerWalker | None,
    stream: StreamInfo | None,
) -> _Deep:
    """deep=True: check every grain directory and grain table entry and every stream marker.

    ``allocated_size`` is the grains the file stores times the grain size: for a stream the
    grain markers walked (None if the walk could not reach the end), else the allocated
    grain table entries.
    """
    if not ctx.deep:
        return _Deep()
    in_markers = layout is not None and walk is not None and layout.gd_offset >= walk.start
    if ctx.source.speculative:
        if layout is not None and not in_markers:
            prefetch_directory(ctx, layout)  # so the final parse finds the tables kept
        return _Deep()
    markers: MarkerWalk | None = None
    tables: GrainTables | None = None
    if walk is not None:
        from .markers import finish_marker_walk, tables_from_markers

        markers = finish_marker_walk(ctx, walk, stream)
        if layout is not None and in_markers:
            tables = tables_from_markers(ctx, layout, walk.tables, markers.complete)
    if layout is not None and not in_markers:
        tables = tables_from_directory(ctx, layout)
    if markers is not None and walk is not None:
        if tables is not None and markers.complete:
            _compare_grain_counts(ctx, tables, markers)
        allocated = markers.grains * walk.grain_bytes if markers.complete else None
        return _Deep(tables, markers, allocated)
    allocated = tables.allocated_grains * layout.grain_bytes if tables and layout else None
    return _Deep(tables, None, allocated)


def _compare_grain_counts(ctx: Context, tables: GrainTables, markers: MarkerWalk) -> None:
    if tables.bad_entries or markers.bad_markers:
        return  # already unsafe; the counts cannot agree
    if tables.allocated_grains != markers.grains:
        ctx.findings.add(
            GRAIN_COUNT_MISMATCH,
            f"the grain tables name {tables.allocated_grains} grains, the stream holds "
            f"{markers.grains} grain markers",
        )
