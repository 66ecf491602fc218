"""Topology of a delivery: overlapping parcels, sliver gaps, sliver parcels, unmatched edges.

Overlaps and gaps between parcels or at sheet joins are reported, never fixed (TT 25/2014 Điều
8, 16.3; ``shared/DOMAIN.md``). These are plain functions over canonical parcels in the storage
CRS (metres); each returns findings and takes its tolerances as arguments.

How it stays fast at province scale
-----------------------------------
A delivery is nearly a valid polygonal coverage: neighbouring parcels share every vertex of
their common boundary. GEOS's coverage validator (``shapely.coverage_invalid_edges``) checks
that in one pass over an STRtree and returns, for each parcel, the edges that break it: edges
inside another parcel (an overlap), edges on or near a neighbour's edge without matching it (an
unmatched vertex, a boundary drawn twice) and, given a gap width, the edges of gaps narrower
than that. The other rules look only where that pass points:

* two parcels can only overlap if a boundary of one runs inside the other, and such an edge is
  flagged; so intersection areas are computed only for the parcels that flagged edges touch;
* a narrow gap is lined with flagged edges, so the union is taken only of flagged parcels and
  their neighbours; its holes, less any other parcel lying in them, are the gaps.

The validator runs in chunks of whole map sheets on a thread pool (GEOS releases the GIL). Each
chunk carries a halo of the parcels whose envelopes come within the gap width of its own: that
is the validator's own notion of adjacency, and a parcel's edges depend only on its adjacent
parcels, so results are the same for any chunking and any number of threads.

Rows whose geometry is missing, empty, not polygonal or invalid are skipped: the geometry rules
of the catalogue report (and reject) those.

Checking only what changed
--------------------------
A re-delivery mostly repeats parcels the register already holds, whose findings were made when
they were loaded. With ``focus`` (the changed parcels), only the findings that involve a focus
parcel are made, and only the parcels around the focus ones are checked. The coverage check
runs on the focus parcels with their halos and also keeps, for every other parcel of a halo,
the edges invalid relative to that halo. That misses nothing: an edge invalid against a focus
parcel is invalid against any set of parcels that holds it, so a neighbour lying wholly inside
a focus parcel (whose own edges are then all valid) is still flagged. Each parcel flagged so,
within the gap width of a parcel already checked, is then checked in full with its own halo,
and so on until no new parcel is flagged: that follows a gap along its whole lining, however
far it reaches. Overlaps and gaps are reported when a focus parcel is one of their parcels;
slivers and edge mismatches of focus parcels only.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from landpipe import schemas
from landpipe.schemas import parcel
from landpipe.schemas.findings import Finding

OVERLAP = "TOPO_OVERLAP"
GAP = "TOPO_GAP"
SLIVER = "TOPO_SLIVER"
EDGE_MISMATCH = "TOPO_EDGE_MISMATCH"
#: The rules of this module.
RULES = (OVERLAP, GAP, SLIVER, EDGE_MISMATCH)

#: Parameters of :func:`topology_findings`: name -> (rule code, parameter in the catalogue).
PARAMETERS: dict[str, tuple[str, str]] = {
    "overlap_min_area_m2": (OVERLAP, "min_area_m2"),
    "gap_max_width_m": (GAP, "max_width_m"),
    "gap_min_area_m2": (GAP, "min_area_m2"),
    "sliver_min_area_m2": (SLIVER, "min_area_m2"),
    "sliver_min_thinness": (SLIVER, "min_thinness"),
    "edge_tolerance_m": (EDGE_MISMATCH, "tolerance_m"),
}


def catalogue_params() -> dict[str, float]:
    """The parameters of :func:`topology_findings` as ``schemas/rules.yaml`` sets them."""
    rules = schemas.rules()
    return {name: rules[code].params[key] for name, (code, key) in PARAMETERS.items()}


#: Parcels per chunk of the coverage check: whole sheets of one commune are grouped up to this
#: many. A chunk's halo is checked twice, so a commune split in two costs more than one chunk:
#: on the benchmark's million parcels (communes of 10,500), 10,000 took 8.9 CPU-s, 50,000 7.1.
#: A commune is seldom larger, and a province's communes still keep every thread busy.
DEFAULT_CHUNK_SIZE = 50_000

# Extra reach of a chunk's halo beyond the gap width, against rounding in the envelopes.
_HALO_MARGIN_M = 1e-3
#: Distance within which a parcel's boundary counts as lining a gap.
LINING_M = 1e-3
_POLYGONAL = (3, 6)  # GEOS type ids of Polygon and MultiPolygon


# --------------------------------------------------------------------------- the coverage


@dataclass
class _Coverage:
    """The usable parcels of one or two frames as flat arrays, with their STRtree."""

    geometry: np.ndarray
    source_row: np.ndarray  # int64, -1 where unknown (register parcels)
    commune_code: np.ndarray
    sheet_no: np.ndarray
    parcel_no: np.ndarray
    register: np.ndarray  # bool: True for a parcel of the register, False for the delivery
    chunk: np.ndarray
    tree: shapely.STRtree
    focus: np.ndarray | None = None  # bool: parcels whose findings are wanted; None: all

    @classmethod
    def of(
        cls,
        frames: list[tuple[gpd.GeoDataFrame, bool]],
        chunk_size: int | None,
        workers: int,
        *,
        valid: bool = False,
        focus: np.ndarray | None = None,
    ) -> _Coverage:
        """The usable parcels of ``frames``. With ``valid`` the geometries of the delivery
        (the frames that are not the register's) are known to be valid polygons and are not
        checked again; ``focus`` marks rows of the first frame (see the module)."""
        if focus is not None and np.all(focus):
            focus = None
        columns: dict[str, list[np.ndarray]] = {
            name: [] for name in ("g", "s", "c", "sh", "p", "r", "f")
        }
        for number, (frame, is_register) in enumerate(frames):
            geometry = np.asarray(frame.geometry.array, dtype=object)
            if valid and not is_register:
                usable = np.ones(len(geometry), dtype=bool)
            else:
                usable = _usable(geometry, workers)
            wanted = focus if focus is not None and number == 0 else np.zeros(len(frame), bool)
            columns["f"].append(np.asarray(wanted, dtype=bool)[usable])
            columns["g"].append(geometry[usable])
            if parcel.SOURCE_ROW in frame:
                rows = frame[parcel.SOURCE_ROW].to_numpy(dtype=np.int64, na_value=-1)
            else:
                rows = np.full(len(frame), -1, dtype=np.int64)
            columns["s"].append(rows[usable])
            commune_code = frame["commune_code"].to_numpy(dtype=object, na_value=None)
            columns["c"].append(commune_code[usable])
            for name, column in (("sh", "sheet_no"), ("p", "parcel_no")):
                number = pd.to_numeric(frame[column]).to_numpy(dtype=np.float64, na_value=np.nan)
                columns[name].append(number[usable])
            columns["r"].append(np.full(int(usable.sum()), is_register))
        commune_code = np.concatenate(columns["c"])
        sheet_no = np.concatenate(columns["sh"])
        geometry = np.concatenate(columns["g"])
        tree = shapely.STRtree(geometry)
        tree.query(geometry[:1])  # build it here, not in the first of several threads
        return cls(
            geometry=geometry,
            source_row=np.concatenate(columns["s"]),
            commune_code=commune_code,
            sheet_no=sheet_no,
            parcel_no=np.concatenate(columns["p"]),
            register=np.concatenate(columns["r"]),
            chunk=_chunk_ids(commune_code, sheet_no, chunk_size),
            tree=tree,
            focus=None if focus is None else np.concatenate(columns["f"]),
        )

    def __len__(self) -> int:
        return len(self.geometry)

    @property
    def focused(self) -> np.ndarray | None:
        """Places of the focus parcels; None when every parcel is in focus."""
        return None if self.focus is None else np.flatnonzero(self.focus)

    @functools.cached_property
    def rank(self) -> np.ndarray:
        """Place of each parcel in the reporting order: delivery by source row, then register."""
        order = np.lexsort((np.arange(len(self)), self.source_row, self.register))
        return order.argsort()

    def key(self, i: int) -> tuple[str | None, int | None, int | None]:
        sheet_no, parcel_no = self.sheet_no[i], self.parcel_no[i]
        return (
            None if self.commune_code[i] is None else str(self.commune_code[i]),
            None if np.isnan(sheet_no) else int(sheet_no),
            None if np.isnan(parcel_no) else int(parcel_no),
        )

    def name(self, i: int) -> str:
        text = "/".join("?" if part is None else str(part) for part in self.key(i))
        if self.register[i]:
            return f"register parcel {text}"
        return f"parcel {text} (record {int(self.source_row[i])})"

    def finding(self, rule_code: str, i: int, other: int | None = None, **fields) -> Finding:
        """A finding on parcel ``i`` (and ``other``); register parcels carry no source row."""
        commune_code, sheet_no, parcel_no = self.key(i)
        others = (None, None, None) if other is None else self.key(other)
        return Finding(
            rule_code=rule_code,
            source_row=None if self.register[i] else int(self.source_row[i]),
            commune_code=commune_code,
            sheet_no=sheet_no,
            parcel_no=parcel_no,
            other_commune_code=others[0],
            other_sheet_no=others[1],
            other_parcel_no=others[2],
            **fields,
        )


def _usable(geometry: np.ndarray, workers: int) -> np.ndarray:
    """Rows with a valid polygonal geometry (checked on ``workers`` threads)."""
    present = ~shapely.is_missing(geometry)
    present[present] = ~shapely.is_empty(geometry[present])
    present[present] = np.isin(shapely.get_type_id(geometry[present]), _POLYGONAL)
    candidates = np.flatnonzero(present)
    pieces = np.array_split(candidates, max(1, min(workers, len(candidates) // 10_000)))
    valid = _map(lambda rows: shapely.is_valid(geometry[rows]), pieces, workers)
    present[candidates] = np.concatenate(valid) if valid else []
    return present


def _chunk_ids(
    commune_code: np.ndarray, sheet_no: np.ndarray, chunk_size: int | None
) -> np.ndarray:
    """Chunk of each parcel: whole sheets of one commune, up to ``chunk_size`` parcels.

    Map sheets are compact areas, so a chunk's bounding box holds little besides the chunk.
    """
    n = len(commune_code)
    if chunk_size is None or n <= chunk_size:
        return np.zeros(n, dtype=np.int64)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1 or None, got {chunk_size}")
    commune, _ = pd.factorize(commune_code, sort=True)  # missing: -1
    sheet = np.nan_to_num(sheet_no, nan=-1.0).astype(np.int64)
    sheet -= sheet.min()
    key = commune * (sheet.max() + 1) + sheet
    keys, group = np.unique(key, return_inverse=True)
    group_commune = keys // (sheet.max() + 1)
    chunk_of_group = np.empty(len(keys), dtype=np.int64)
    chunk, filled = -1, 0
    for g, size in enumerate(np.bincount(group)):  # one step per sheet
        new_commune = g == 0 or group_commune[g] != group_commune[g - 1]
        if new_commune or filled + size > chunk_size:
            chunk, filled = chunk + 1, 0
        chunk_of_group[g] = chunk
        filled += size
    return chunk_of_group[group]


def _keys(frame: pd.DataFrame) -> pd.MultiIndex:
    """Parcel keys, typed alike whatever the frame's dtypes (a sheet number 5.0 is 5)."""
    commune_code, sheet_no, parcel_no = (frame[column] for column in parcel.KEY)
    return pd.MultiIndex.from_arrays(
        [
            commune_code.astype("string"),
            pd.to_numeric(sheet_no).astype("Int64"),
            pd.to_numeric(parcel_no).astype("Int64"),
        ]
    )


def _workers(workers: int | None) -> int:
    if workers is None:
        return min(os.cpu_count() or 1, 8)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    return workers


def _invalid_edges(
    coverage: _Coverage,
    gap_width: float,
    workers: int,
    members: np.ndarray | None = None,
    *,
    around: np.ndarray | None = None,
) -> np.ndarray:
    """Coverage-invalid edges of each parcel of ``members`` (all by default); None elsewhere.

    ``around``, an object array over the coverage, receives the invalid edges of the other
    parcels of the members' halos, relative to those halos.
    """
    n = len(coverage)
    edges = np.full(n, None, dtype=object)
    members = np.arange(n) if members is None else np.sort(members)
    if not len(members):
        return edges
    chunk = coverage.chunk[members]
    order = np.argsort(chunk, kind="stable")
    groups = np.split(members[order], np.flatnonzero(np.diff(chunk[order])) + 1)
    whole = len(groups) == 1 and len(members) == n

    def check(chunk_members: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        context = chunk_members if whole else _halo(coverage, chunk_members, gap_width)
        found = shapely.coverage_invalid_edges(coverage.geometry[context], gap_width=gap_width)
        return chunk_members, context, found

    for chunk_members, context, found in _map(check, groups, workers):
        edges[chunk_members] = found[np.searchsorted(context, chunk_members)]
        if around is not None:
            flagged = _flagged(found)
            parcels, lines = context[flagged], found[flagged]
            seen = ~shapely.is_missing(around[parcels])
            around[parcels[seen]] = shapely.union(around[parcels[seen]], lines[seen])
            around[parcels[~seen]] = lines[~seen]
    return edges


def _focus_edges(coverage: _Coverage, gap_width: float, workers: int) -> np.ndarray:
    """Invalid edges of the focus parcels and of the parcels linked to them by invalid edges.

    The focus parcels are checked with their halos; a parcel of a halo whose edges are
    invalid relative to it, within ``gap_width`` of a parcel checked so far, is checked in
    full next, and so on (see the module). None for parcels not checked: none of their
    invalid edges involves a focus parcel.
    """
    n = len(coverage)
    edges = np.full(n, None, dtype=object)
    checked = np.zeros(n, dtype=bool)
    todo = np.flatnonzero(coverage.focus)
    while len(todo):
        around = np.full(n, None, dtype=object)
        found = _invalid_edges(coverage, gap_width, workers, todo, around=around)
        edges[todo] = found[todo]
        checked[todo] = True
        flagged = np.flatnonzero(~shapely.is_missing(around) & ~checked)
        near, other = coverage.tree.query(
            around[flagged], predicate="dwithin", distance=max(gap_width, LINING_M)
        )
        linked = checked[other] & (flagged[near] != other)
        todo = np.unique(flagged[near[linked]])
    return edges


def _halo(coverage: _Coverage, members: np.ndarray, gap_width: float) -> np.ndarray:
    """``members`` and every parcel whose envelope comes within ``gap_width`` of theirs.

    The parcels in the members' joint bounding box are a superset, found with one query; a
    superset does no harm (the validator itself only looks at envelope neighbours), but when
    that box holds far more than the members (scattered members, a sprawling chunk), each
    member's own envelope is queried instead.
    """
    reach = gap_width + _HALO_MARGIN_M
    x0, y0, x1, y1 = shapely.bounds(coverage.geometry[members]).T
    box = shapely.box(x0.min() - reach, y0.min() - reach, x1.max() + reach, y1.max() + reach)
    near = coverage.tree.query(box)
    if len(near) > 1.5 * len(members) + 1_000:
        _, near = coverage.tree.query(shapely.box(x0 - reach, y0 - reach, x1 + reach, y1 + reach))
    return np.union1d(members, near)


def _map(function: Callable, items: list, workers: int) -> list:
    if workers == 1 or len(items) == 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(function, items))


def _flagged(edges: np.ndarray) -> np.ndarray:
    computed = np.flatnonzero(~shapely.is_missing(edges))
    return computed[~shapely.is_empty(edges[computed])]


# --------------------------------------------------------------------------- overlaps


@dataclass
class _Overlap:
    first: int
    second: int
    area: float
    location: shapely.Geometry


def _find_overlaps(
    coverage: _Coverage, edges: np.ndarray, min_area_m2: float, across_only: bool = False
) -> list[_Overlap]:
    """Pairs sharing more than ``min_area_m2`` of interior, lower source row (delivery) first."""
    flagged = _flagged(edges)
    if not len(flagged):
        return []
    query, other = coverage.tree.query(edges[flagged], predicate="intersects")
    one = flagged[query]
    keep = one != other
    if across_only:
        keep &= coverage.register[one] != coverage.register[other]
    one, other = one[keep], other[keep]
    rank = coverage.rank
    swap = rank[one] > rank[other]
    first, second = np.where(swap, other, one), np.where(swap, one, other)
    pairs = np.unique(np.column_stack([first, second]), axis=0)
    if not len(pairs):
        return []
    first, second = pairs[:, 0], pairs[:, 1]
    if coverage.focus is not None:
        involved = coverage.focus[first] | coverage.focus[second]
        first, second = first[involved], second[involved]
    shared = shapely.intersection(coverage.geometry[first], coverage.geometry[second])
    area = shapely.area(shared)
    hits = np.flatnonzero(area > min_area_m2)
    hits = hits[np.lexsort((rank[second[hits]], rank[first[hits]]))]
    return [
        _Overlap(int(first[k]), int(second[k]), float(area[k]), _polygonal_part(shared[k]))
        for k in hits
    ]


def _polygonal_part(geometry: shapely.Geometry) -> shapely.Geometry:
    if shapely.get_type_id(geometry) in _POLYGONAL:
        return geometry
    parts = shapely.get_parts(geometry)
    return shapely.union_all(parts[np.isin(shapely.get_type_id(parts), _POLYGONAL)])


def _overlap_findings(
    coverage: _Coverage, found: list[_Overlap], min_area_m2: float
) -> list[Finding]:
    return [
        coverage.finding(
            OVERLAP,
            o.first,
            o.second,
            message=f"{coverage.name(o.first)} and {coverage.name(o.second)} overlap by "
            f"{o.area:.2f} m²",
            location=o.location,
            area_m2=o.area,
            detail={
                "area_m2": round(o.area, 3),
                "min_area_m2": min_area_m2,
                **({"against": "register"} if coverage.register[o.second] else {}),
            },
        )
        for o in found
    ]


# --------------------------------------------------------------------------- gaps


@dataclass
class _Gap:
    location: shapely.Geometry
    area: float
    width: float
    lining: np.ndarray  # parcels lining the gap, longest shared boundary first
    lining_length: np.ndarray


def _find_gaps(
    coverage: _Coverage, edges: np.ndarray, max_width_m: float, min_area_m2: float
) -> list[_Gap]:
    """Holes in the coverage narrower than ``max_width_m`` and of at least ``min_area_m2``."""
    geometry, tree = coverage.geometry, coverage.tree
    if coverage.focus is None:
        holed = _with_holes(geometry)
    else:
        focused = coverage.focused
        holed = focused[_with_holes(geometry[focused])]
    seeds = np.union1d(_flagged(edges), holed)
    if not len(seeds):
        return []
    _, around = tree.query(geometry[seeds], predicate="intersects")
    nearby = np.union1d(seeds, around)
    # Holes of the union of the parcels around the flagged edges: every narrow gap is one.
    outlines = shapely.get_parts(shapely.disjoint_subset_union_all(geometry[nearby]))
    rings, ring_of = shapely.get_rings(outlines, return_index=True)
    interior = np.ones(len(rings), dtype=bool)
    interior[np.unique(ring_of, return_index=True)[1]] = False  # each outline's exterior
    holes = shapely.polygons(rings[interior])
    if not len(holes):
        return []
    # A hole may hold parcels that are not around the flagged edges: they are no gap.
    in_nearby = np.zeros(len(coverage), dtype=bool)
    in_nearby[nearby] = True
    hole_of, inside = tree.query(holes, predicate="intersects")
    keep = ~in_nearby[inside]
    hole_of, inside = hole_of[keep], inside[keep]
    pieces: list[shapely.Geometry] = []
    for k, hole in enumerate(holes):  # one step per hole: faults, not parcels
        filled = inside[hole_of == k]
        if len(filled):
            hole = shapely.difference(hole, shapely.union_all(geometry[filled]))
        pieces.extend(shapely.get_parts(hole))
    pieces = np.asarray(pieces, dtype=object)
    if not len(pieces):
        return []
    area = shapely.area(pieces)
    pieces, area = pieces[area >= min_area_m2], area[area >= min_area_m2]
    # Narrower than the limit: no inscribed circle that wide, so eroding by half the limit
    # leaves nothing. The width reported is that circle's, found to a hundredth of the limit.
    narrow = shapely.is_empty(shapely.buffer(pieces, -max_width_m / 2))
    pieces, area = pieces[narrow], area[narrow]
    radius = shapely.length(shapely.maximum_inscribed_circle(pieces, tolerance=max_width_m / 100))
    gaps = []
    for piece, piece_area, piece_radius in zip(pieces, area, radius, strict=True):
        lining, length = _lining(coverage, piece)
        if coverage.focus is None or coverage.focus[lining].any():
            gaps.append(_Gap(piece, float(piece_area), 2 * float(piece_radius), lining, length))
    return gaps


def _with_holes(geometry: np.ndarray) -> np.ndarray:
    """Parcels with an interior ring: a hole no other parcel fills is a gap too."""
    multi = np.flatnonzero(shapely.get_type_id(geometry) == 6)
    holed = shapely.get_num_interior_rings(geometry) > 0  # 0 for every MultiPolygon
    parts, part_of = shapely.get_parts(geometry[multi], return_index=True)
    holed[multi[np.unique(part_of[shapely.get_num_interior_rings(parts) > 0])]] = True
    return np.flatnonzero(holed)


def _lining(coverage: _Coverage, gap: shapely.Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Parcels whose boundary lines ``gap``, longest shared length first (then report order)."""
    near = coverage.tree.query(gap, predicate="dwithin", distance=LINING_M)
    band = shapely.buffer(shapely.boundary(gap), LINING_M)
    length = shapely.length(shapely.intersection(band, shapely.boundary(coverage.geometry[near])))
    order = np.lexsort((coverage.rank[near], -length))
    near, length = near[order], length[order]
    return near[length > 0], length[length > 0]


def _gap_findings(
    coverage: _Coverage, found: list[_Gap], max_width_m: float, pick: Callable
) -> list[Finding]:
    rank = coverage.rank
    findings = []
    for gap in found:
        pair = pick(gap)
        if pair is None:
            continue
        first, second = pair
        if second is not None and rank[second] < rank[first]:
            first, second = second, first
        between = (
            f"between {coverage.name(first)} and {coverage.name(second)}"
            if second is not None
            else f"in {coverage.name(first)}"
        )
        finding = coverage.finding(
            GAP,
            first,
            second,
            message=f"a gap of {gap.area:.2f} m², {gap.width:.2f} m wide, lies {between}",
            location=gap.location,
            area_m2=gap.area,
            detail={
                "area_m2": round(gap.area, 3),
                "width_m": round(gap.width, 3),
                "max_width_m": max_width_m,
                "lining_parcels": len(gap.lining),
                **({"against": "register"} if coverage.register[gap.lining].any() else {}),
            },
        )
        point = shapely.point_on_surface(gap.location)
        findings.append(
            ((rank[first], -1 if second is None else rank[second], point.x, point.y), finding)
        )
    findings.sort(key=lambda item: item[0])
    return [finding for _, finding in findings]


def _two_longest(gap: _Gap) -> tuple[int, int | None] | None:
    if not len(gap.lining):
        return None
    return int(gap.lining[0]), (int(gap.lining[1]) if len(gap.lining) > 1 else None)


# --------------------------------------------------------------------------- public rules


def overlaps(
    parcels: gpd.GeoDataFrame,
    *,
    min_area_m2: float = 0.05,
    chunk_size: int | None = DEFAULT_CHUNK_SIZE,
    workers: int | None = None,
) -> list[Finding]:
    """``TOPO_OVERLAP``: pairs of parcels sharing more than ``min_area_m2`` of interior.

    Containment and equal geometries count; parcels that only touch do not. One finding per
    pair, the parcel with the lower ``source_row`` first, the other as ``other_*``;
    ``area_m2`` is the shared area and ``location`` the shared polygon. Findings are ordered
    by the two source rows.

    Parameters
    ----------
    parcels
        Canonical parcels (``commune_code``, ``sheet_no``, ``parcel_no``, ``source_row``,
        polygonal geometry in a metric CRS).
    min_area_m2
        Shared area at or below which two parcels are not reported. Recorded areas are
        rounded to 0.1 m², so 0.05 m² is the smallest overlap a recorded area could show.
    chunk_size, workers
        Parcels per chunk of the coverage check (whole sheets; None: one chunk) and threads
        (None: the CPU count, at most 8). Neither changes the result.
    """
    threads = _workers(workers)
    coverage = _Coverage.of([(parcels, False)], chunk_size, threads)
    edges = _invalid_edges(coverage, 0.0, threads)
    return _overlap_findings(coverage, _find_overlaps(coverage, edges, min_area_m2), min_area_m2)


def gaps(
    parcels: gpd.GeoDataFrame,
    *,
    max_width_m: float = 0.5,
    min_area_m2: float = 0.01,
    chunk_size: int | None = DEFAULT_CHUNK_SIZE,
    workers: int | None = None,
) -> list[Finding]:
    """``TOPO_GAP``: unclaimed holes between parcels narrower than ``max_width_m``.

    A gap is a bounded region that no parcel covers (a hole of the union), with an inscribed
    circle narrower than ``max_width_m`` and an area of at least ``min_area_m2``. Streets
    between blocks are wider and the outside of the delivery is no hole, so neither is
    reported. The finding carries the two parcels with the longest boundary along the gap
    (lower ``source_row`` first; ``other_*`` empty if only one parcel lines it), ``area_m2``
    the gap's area, ``location`` the gap polygon and ``detail.width_m`` its width.

    ``chunk_size`` and ``workers`` are as for :func:`overlaps`.
    """
    threads = _workers(workers)
    coverage = _Coverage.of([(parcels, False)], chunk_size, threads)
    edges = _invalid_edges(coverage, max_width_m, threads)
    found = _find_gaps(coverage, edges, max_width_m, min_area_m2)
    return _gap_findings(coverage, found, max_width_m, _two_longest)


def slivers(
    parcels: gpd.GeoDataFrame, *, min_area_m2: float = 1.0, min_thinness: float = 0.05
) -> list[Finding]:
    """``TOPO_SLIVER``: parcels smaller than ``min_area_m2`` or thinner than ``min_thinness``.

    Thinness is the isoperimetric quotient 4πA/P²: 1 for a disc, about 0.79 for a square,
    0.05 for a 1 m × 60 m strip. Location is a point on the parcel's surface.
    """
    coverage = _Coverage.of([(parcels, False)], None, 1)
    return _sliver_findings(coverage, min_area_m2, min_thinness)


def _sliver_findings(coverage: _Coverage, min_area_m2: float, min_thinness: float) -> list[Finding]:
    area = np.full(len(coverage), np.nan)
    perimeter = np.full(len(coverage), np.nan)
    checked = slice(None) if coverage.focus is None else coverage.focused
    area[checked] = shapely.area(coverage.geometry[checked])
    perimeter[checked] = shapely.length(coverage.geometry[checked])
    with np.errstate(invalid="ignore"):
        thinness = 4 * np.pi * area / perimeter**2
        hits = np.flatnonzero((area < min_area_m2) | (thinness < min_thinness))
    hits = hits[np.argsort(coverage.source_row[hits], kind="stable")]
    points = shapely.point_on_surface(coverage.geometry[hits])
    findings = []
    for i, point in zip(hits, points, strict=True):
        reason = (
            f"its area {area[i]:.2f} m² is below {min_area_m2} m²"
            if area[i] < min_area_m2
            else f"its thinness 4πA/P² = {thinness[i]:.3f} is below {min_thinness}"
        )
        findings.append(
            coverage.finding(
                SLIVER,
                i,
                message=f"{coverage.name(i)} is a sliver: {reason}",
                location=point,
                area_m2=float(area[i]),
                detail={
                    "area_m2": round(float(area[i]), 3),
                    "thinness": round(float(thinness[i]), 4),
                    "min_area_m2": min_area_m2,
                    "min_thinness": min_thinness,
                },
            )
        )
    return findings


def edge_mismatches(
    parcels: gpd.GeoDataFrame,
    *,
    tolerance_m: float = 0.05,
    chunk_size: int | None = DEFAULT_CHUNK_SIZE,
    workers: int | None = None,
) -> list[Finding]:
    """``TOPO_EDGE_MISMATCH``: parcels whose boundary is not vertex-matched with a neighbour's.

    Uses GEOS's coverage check with gap width ``tolerance_m``: an edge is invalid when it runs
    on or within ``tolerance_m`` of a neighbour's edge without sharing its vertices, or runs
    inside a neighbour (so overlapping parcels are reported here too). One finding per parcel,
    ``location`` its invalid edges as a MultiLineString.

    ``chunk_size`` and ``workers`` are as for :func:`overlaps`.
    """
    threads = _workers(workers)
    coverage = _Coverage.of([(parcels, False)], chunk_size, threads)
    edges = _invalid_edges(coverage, tolerance_m, threads)
    return _edge_findings(coverage, edges, tolerance_m)


def _edge_findings(coverage: _Coverage, edges: np.ndarray, tolerance_m: float) -> list[Finding]:
    flagged = _flagged(edges)
    flagged = flagged[np.argsort(coverage.source_row[flagged], kind="stable")]
    findings = []
    for i in flagged:
        lines = edges[i]
        if lines.geom_type == "LineString":
            lines = shapely.MultiLineString([lines])
        findings.append(
            coverage.finding(
                EDGE_MISMATCH,
                i,
                message=f"{coverage.name(i)}: {lines.length:.2f} m of its boundary does not "
                f"match its neighbours' boundaries vertex for vertex (tolerance {tolerance_m} m)",
                location=lines,
                detail={"length_m": round(lines.length, 3), "tolerance_m": tolerance_m},
            )
        )
    return findings


def topology_findings(
    parcels: gpd.GeoDataFrame,
    params: Mapping[str, float],
    *,
    chunk_size: int | None = DEFAULT_CHUNK_SIZE,
    workers: int | None = None,
    focus: np.ndarray | None = None,
    valid: bool = False,
) -> list[Finding]:
    """Overlaps, gaps, slivers and edge mismatches, in that order, sharing one coverage check.

    ``params`` holds the keys of :data:`PARAMETERS` (missing keys take the catalogue's). The
    findings are those of :func:`overlaps`, :func:`gaps`, :func:`slivers` and
    :func:`edge_mismatches` called one by one; this runs the full coverage check once instead
    of three times.

    ``focus``, a boolean mask over ``parcels``, keeps only the findings that involve a focus
    parcel: overlaps and gaps with a focus parcel among their parcels, slivers and edge
    mismatches of focus parcels. Only the parcels around the focus ones are checked (see the
    module). ``valid`` says the geometries are known to be valid polygons.
    """
    unknown = set(params) - set(PARAMETERS)
    if unknown:
        raise ValueError(f"unknown topology parameters: {', '.join(sorted(unknown))}")
    p = {**catalogue_params(), **params}
    threads = _workers(workers)
    coverage = _Coverage.of([(parcels, False)], chunk_size, threads, valid=valid, focus=focus)
    # Edges invalid at a gap width are invalid at any wider one, so one full pass at the gap
    # width serves overlaps and gaps, and narrows the edge check to the parcels it flagged.
    gap_width = p["gap_max_width_m"]
    edges = _edges(coverage, gap_width, threads)
    flagged = _flagged(edges)
    if coverage.focus is not None:
        flagged = flagged[coverage.focus[flagged]]
    if p["edge_tolerance_m"] <= gap_width:
        mismatched = _invalid_edges(coverage, p["edge_tolerance_m"], threads, flagged)
    else:
        mismatched = _invalid_edges(coverage, p["edge_tolerance_m"], threads, coverage.focused)
    found_gaps = _find_gaps(coverage, edges, gap_width, p["gap_min_area_m2"])
    found_overlaps = _find_overlaps(coverage, edges, p["overlap_min_area_m2"])
    return [
        *_overlap_findings(coverage, found_overlaps, p["overlap_min_area_m2"]),
        *_gap_findings(coverage, found_gaps, gap_width, _two_longest),
        *_sliver_findings(coverage, p["sliver_min_area_m2"], p["sliver_min_thinness"]),
        *_edge_findings(coverage, mismatched, p["edge_tolerance_m"]),
    ]


def _edges(coverage: _Coverage, gap_width: float, workers: int) -> np.ndarray:
    """Invalid edges at ``gap_width``: of every parcel, or around the focus parcels."""
    if coverage.focus is None:
        return _invalid_edges(coverage, gap_width, workers)
    return _focus_edges(coverage, gap_width, workers)


def against_register(
    parcels: gpd.GeoDataFrame,
    neighbours: gpd.GeoDataFrame,
    *,
    overlap_min_area_m2: float = 0.05,
    gap_max_width_m: float = 0.5,
    gap_min_area_m2: float = 0.01,
    chunk_size: int | None = DEFAULT_CHUNK_SIZE,
    workers: int | None = None,
    focus: np.ndarray | None = None,
    valid: bool = False,
) -> list[Finding]:
    """Overlaps and narrow gaps between the delivery and the parcels already registered.

    ``neighbours`` are current register parcels near the delivery (canonical key columns and
    geometry, same CRS). A register parcel with the key of a delivered parcel is that parcel's
    previous version, which the delivery replaces: it is no neighbour and takes no part in
    either check. Findings use the rule codes ``TOPO_OVERLAP`` and ``TOPO_GAP`` with
    ``detail.against = "register"``; the delivered parcel is the first key (with its
    ``source_row``) and the register parcel ``other_*``. Only overlaps between a delivered and
    a register parcel, and gaps lined by both, are reported: those inside the delivery are the
    business of :func:`overlaps` and :func:`gaps`.

    ``focus`` (a boolean mask over ``parcels``) and ``valid`` (of ``parcels``) are as for
    :func:`topology_findings`.
    """
    if parcels.crs is not None and neighbours.crs is not None and parcels.crs != neighbours.crs:
        raise ValueError(f"neighbours are in {neighbours.crs}, the delivery in {parcels.crs}")
    replaced = _keys(neighbours).isin(_keys(parcels).dropna())
    replaced &= neighbours[list(parcel.KEY)].notna().all(axis=1).to_numpy()
    threads = _workers(workers)
    frames = [(parcels, False), (neighbours[~replaced], True)]
    coverage = _Coverage.of(frames, chunk_size, threads, valid=valid, focus=focus)
    edges = _edges(coverage, gap_max_width_m, threads)
    found = _find_overlaps(coverage, edges, overlap_min_area_m2, across_only=True)

    def delivered_and_registered(gap: _Gap) -> tuple[int, int] | None:
        on_register = coverage.register[gap.lining]
        if on_register.all() or not on_register.any():
            return None
        return int(gap.lining[~on_register][0]), int(gap.lining[on_register][0])

    found_gaps = _find_gaps(coverage, edges, gap_max_width_m, gap_min_area_m2)
    return [
        *_overlap_findings(coverage, found, overlap_min_area_m2),
        *_gap_findings(coverage, found_gaps, gap_max_width_m, delivered_and_registered),
    ]
