"""Validate canonical parcels against the rule catalogue (``schemas/rules.yaml``).

Plain functions over a GeoDataFrame in the storage CRS; no database and no Prefect. Each rule
marks rows and writes findings; a row with any ``reject`` finding is not loaded and is kept
as delivered with its rule codes.

A re-delivery mostly repeats what the register holds. Parcels the caller marks ``unchanged``
(same content as their current version in the register, see
:func:`landpipe.load.look_at_register`) passed the catalogue when that version was loaded,
and its findings on them stand: they are not checked again by the rules of one parcel, and
topology reports only what involves a changed or new parcel (an overlap of a changed parcel
with an unchanged neighbour is reported). What depends on the delivery as a whole is checked
for every record: missing keys, unknown communes, keys delivered twice.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sys
import threading
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import shapely

from landpipe import schemas, topology
from landpipe.memory import collector_paused
from landpipe.schemas import parcel
from landpipe.schemas.findings import Finding
from landpipe.sources.crs import boundary, district_of
from landpipe.sources.fields import MAX_KEY_NUMBER, land_use_arrow

#: How GEOS's validity reason begins for a NaN or infinite coordinate.
_NOT_A_NUMBER = "Invalid Coordinate"
_REASON_LOCATION = re.compile(r"\[\s*(-?[\d.eE+-]+)\s+(-?[\d.eE+-]+)\s*\]")


class Validation:
    """The outcome of validating a delivery.

    Attributes
    ----------
    parcels
        Rows to load: geometry repaired where needed (Polygon or MultiPolygon; the register
        stores each as a MultiPolygon).
    rejected
        Rows not loaded, geometry as delivered (reprojected), with ``rule_codes``.
    findings
        Every finding, of every severity. The topology findings may still be being made when
        :func:`validate` returns (they never reject a record, so ``parcels`` and ``rejected``
        do not wait for them): reading ``findings`` waits for them, and raises what their
        search raised. A load copies the parcels meanwhile.
    repaired
        ``source_row`` of the parcels whose geometry was repaired.
    unchanged
        For each row of ``parcels``, whether it was taken as unchanged and not checked again
        (see the module); None when every parcel was checked.
    """

    def __init__(
        self,
        parcels: gpd.GeoDataFrame,
        rejected: gpd.GeoDataFrame,
        findings: list[Finding],
        repaired: set[int],
        unchanged: np.ndarray | None = None,
        *,
        pending: Future | None = None,
    ) -> None:
        self.parcels = parcels
        self.rejected = rejected
        self._findings = findings
        self.repaired = repaired
        self.unchanged = unchanged
        self._pending = pending

    @property
    def findings(self) -> list[Finding]:
        if self._pending is not None:
            found = self._pending.result()
            self._pending = None
            self._findings.extend(found)
        return self._findings

    @findings.setter
    def findings(self, findings: list[Finding]) -> None:
        self.findings  # noqa: B018 (what is still being found belongs to the old list)
        self._findings = findings

    def counts(self) -> dict[str, int]:
        """Findings per rule code."""
        return dict(sorted(Counter(f.rule_code for f in self.findings).items()))

    def __getstate__(self) -> dict[str, Any]:
        self.findings  # noqa: B018 (a pending search cannot be pickled: finish it)
        return self.__dict__

    def __repr__(self) -> str:
        return (
            f"Validation({len(self.parcels)} parcels, {len(self.rejected)} rejected, "
            f"{len(self.findings)} findings, {len(self.repaired)} repaired)"
        )


def _key_text(row: pd.Series) -> str:
    parts = []
    for name in parcel.KEY:
        value = row[name]
        parts.append("?" if pd.isna(value) else str(value))
    return "/".join(parts)


def _repair(geometry: shapely.Geometry, params: dict[str, float]) -> shapely.Geometry | None:
    """A repaired polygon when repairing changes no meaning: one part, same area; else None.

    Both of GEOS's repair methods are tried: ``linework`` turns a self-touching shell into a
    polygon with a hole, ``structure`` drops zero-area spikes. A bow-tie comes out as two
    parts either way, and is not repaired.
    """
    for method in ("linework", "structure"):
        fixed = _repaired_by(geometry, method, params)
        if fixed is not None:
            return fixed
    return None


def _repaired_by(
    geometry: shapely.Geometry, method: str, params: dict[str, float]
) -> shapely.Geometry | None:
    if method == "structure":
        fixed = shapely.make_valid(geometry, method=method, keep_collapsed=False)
    else:
        fixed = shapely.make_valid(geometry, method=method)
    if fixed.geom_type == "GeometryCollection":
        polygons = [g for g in fixed.geoms if g.geom_type in ("Polygon", "MultiPolygon")]
        fixed = shapely.union_all(polygons) if polygons else None
    if fixed is None or fixed.is_empty or fixed.geom_type not in ("Polygon", "MultiPolygon"):
        return None
    if fixed.geom_type == "MultiPolygon":
        if len(fixed.geoms) != 1:
            return None
        fixed = fixed.geoms[0]
    # The delivered polygon's (shoelace) area: a repair that changes it changes the parcel.
    tolerance = max(params["max_area_change_m2"], params["max_area_change_ratio"] * fixed.area)
    if abs(fixed.area - geometry.area) > tolerance:
        return None
    return fixed


def _invalid_location(reason: str, geometry: shapely.Geometry) -> shapely.Geometry:
    match = _REASON_LOCATION.search(reason)
    if match:
        return shapely.Point(float(match.group(1)), float(match.group(2)))
    return shapely.point_on_surface(shapely.make_valid(geometry))


@collector_paused()
def validate(
    parcels: gpd.GeoDataFrame,
    prior: list[Finding] | None = None,
    *,
    unchanged: np.ndarray | None = None,
) -> Validation:
    """Run the rule catalogue over ``parcels`` (canonical columns, storage CRS).

    ``prior`` are findings made while reading (text encoding, linework labels); they count
    like the others, and a rejecting one rejects its record. ``unchanged``, a boolean mask
    over ``parcels``, marks parcels whose content the register already holds as current:
    they are not checked again (see the module).
    """
    rules = schemas.rules()
    findings: list[Finding] = list(prior or [])
    geometries = parcels.geometry.values.to_numpy().copy()
    keys = parcels[list(parcel.KEY)]
    source_rows = parcels[parcel.SOURCE_ROW].to_numpy()
    skipped = np.zeros(len(parcels), dtype=bool)
    if unchanged is not None:
        skipped = np.asarray(unchanged, dtype=bool)
        if skipped.shape != (len(parcels),):
            raise ValueError(f"unchanged has {skipped.shape} entries for {len(parcels)} parcels")
    check = ~skipped

    def add(rule_code: str, index: int, message: str, location=None, **detail) -> None:
        row = keys.iloc[index]
        findings.append(
            Finding(
                rule_code=rule_code,
                message=message,
                source_row=int(source_rows[index]),
                location=location,
                detail=detail,
                commune_code=None if pd.isna(row.iloc[0]) else str(row.iloc[0]),
                sheet_no=None if pd.isna(row.iloc[1]) else int(row.iloc[1]),
                parcel_no=None if pd.isna(row.iloc[2]) else int(row.iloc[2]),
            )
        )

    def where(index: int) -> str:
        return f"record {int(source_rows[index])} (parcel {_key_text(keys.iloc[index])})"

    # Geometry: empty, not a polygon, invalid (repaired when it changes no meaning).
    missing = np.zeros(len(parcels), dtype=bool)
    missing[check] = shapely.is_missing(geometries[check]) | shapely.is_empty(geometries[check])
    for i in np.flatnonzero(missing):
        add("GEOM_EMPTY", i, f"{where(i)} has no geometry")
    polygonal = np.ones(len(parcels), dtype=bool)
    polygonal[check] = np.isin(shapely.get_type_id(geometries[check]), (3, 6))
    for i in np.flatnonzero(~missing & ~polygonal):
        kind = geometries[i].geom_type
        add(
            "GEOM_NOT_POLYGON",
            i,
            f"{where(i)} is a {kind}, not a parcel polygon",
            shapely.point_on_surface(geometries[i]),
            geometry_type=kind,
        )
    checked = check & ~missing & polygonal
    invalid = np.zeros(len(parcels), dtype=bool)
    invalid[checked] = ~_is_valid(geometries[checked])
    refused = np.zeros(len(parcels), dtype=bool)  # invalid and not repaired
    repaired: set[int] = set()
    repair_params = rules["GEOM_REPAIRED"].params
    unplaceable = np.zeros(len(parcels), dtype=bool)  # a coordinate is NaN or infinite
    for i in np.flatnonzero(invalid):
        reason = shapely.is_valid_reason(geometries[i])
        if reason.startswith(_NOT_A_NUMBER):
            # Nowhere on a map, and GEOS cannot repair it (make_valid raises): it is rejected,
            # and kept without its geometry, which neither PostGIS nor a report could show.
            unplaceable[i] = refused[i] = True
            geometries[i] = None
            add(
                "GEOM_INVALID",
                i,
                f"{where(i)} has a coordinate that is not a number (NaN or infinite): {reason}",
                reason=reason,
            )
            continue
        location = _invalid_location(reason, geometries[i])
        fixed = _repair(geometries[i], repair_params)
        if fixed is None:
            refused[i] = True
            add(
                "GEOM_INVALID",
                i,
                f"{where(i)} is invalid and not safely repairable: {reason}",
                location,
                reason=reason,
            )
        else:
            geometries[i] = fixed
            repaired.add(int(source_rows[i]))
            add(
                "GEOM_REPAIRED",
                i,
                f"{where(i)} was invalid ({reason}) and was repaired",
                location,
                reason=reason,
                method="make_valid",
            )

    # Keys: missing or unreadable, unknown commune, duplicated within the delivery. These
    # depend on the delivery as a whole, or are cheap: every record is checked.
    key_missing = keys.isna().any(axis=1).to_numpy()
    for i in np.flatnonzero(key_missing):
        absent = [name for name in parcel.KEY if pd.isna(keys.iloc[i][name])]
        add(
            "ATTR_MISSING",
            i,
            f"{where(i)} lacks {', '.join(absent)} (missing, unreadable, or not a whole number"
            f" from 1 to {MAX_KEY_NUMBER})",
            _point(geometries[i]),
            fields=absent,
        )
    known_communes = schemas.commune_codes()
    commune_known = keys["commune_code"].isin(known_communes).to_numpy()
    for i in np.flatnonzero(~commune_known & ~keys["commune_code"].isna().to_numpy()):
        add(
            "ATTR_COMMUNE_UNKNOWN",
            i,
            f"{where(i)}: commune code {keys.iloc[i]['commune_code']} is not a commune "
            "of the province",
            _point(geometries[i]),
        )
    complete = ~key_missing
    duplicated = np.zeros(len(parcels), dtype=bool)
    duplicated[complete] = keys[complete].duplicated(keep=False).to_numpy()
    copies = Counter(tuple(row) for row in keys[duplicated].itertuples(index=False))
    for i in np.flatnonzero(duplicated):
        n = copies[tuple(keys.iloc[i])]
        add(
            "ATTR_KEY_DUPLICATE",
            i,
            f"{where(i)}: the key appears {n} times in the delivery",
            _point(geometries[i]),
            copies=n,
        )

    # Extent: inside the district of its commune (buffered), for polygons with a known commune.
    _check_extent(parcels, geometries, checked & commune_known & ~unplaceable, refused, add, where)

    # Land use: every code in the current or the old list.
    _check_land_use(parcels["land_use_codes"], geometries, check, add, where)

    # Area: computed (on the TM-3 plane) against declared, beyond the tolerance.
    _check_areas(parcels, geometries, checked & ~refused, add, where)

    # Topology, over the parcels that will be loaded (rejected ones have no place in it). Their
    # geometries are valid polygons: the others were rejected above, or are unchanged ones.
    rejecting = {f.source_row for f in findings if f.severity == "reject"}
    kept = ~np.isin(source_rows, list(rejecting))
    candidates = parcels[kept].set_geometry(
        gpd.GeoSeries(geometries[kept], index=parcels.index[kept], crs=parcels.crs)
    )
    focus = check[kept] if skipped[kept].any() else None
    in_background = not any(rules[code].severity == "reject" for code in topology.RULES)
    if not in_background:
        findings.extend(topology_of(candidates, focus=focus, valid=True))

    reject_rows: dict[int, list[str]] = {}
    for finding in findings:
        if finding.severity == "reject" and finding.source_row is not None:
            reject_rows.setdefault(finding.source_row, []).append(finding.rule_code)
    rejected_mask = np.isin(source_rows, list(reject_rows))
    rejected = parcels[rejected_mask].copy()
    if unplaceable.any():
        rejected.loc[unplaceable[rejected_mask], rejected.geometry.name] = None
    rejected["rule_codes"] = [sorted(set(reject_rows[r])) for r in rejected[parcel.SOURCE_ROW]]
    accepted = parcels[~rejected_mask].copy()
    accepted = accepted.set_geometry(
        gpd.GeoSeries(geometries[~rejected_mask], index=accepted.index, crs=parcels.crs)
    )
    pending = None
    if in_background:  # no topology finding rejects a record: find them while the caller goes on
        pending = _in_background(
            topology_of, candidates, focus=focus, valid=True, yielding=focus is None
        )
    kept_unchanged = skipped[~rejected_mask] if unchanged is not None else None
    return Validation(accepted, rejected, findings, repaired, kept_unchanged, pending=pending)


def _is_valid(geometries: np.ndarray) -> np.ndarray:
    """``shapely.is_valid`` on the CPU's threads (GEOS lets go of the GIL)."""
    pieces = max(1, min(os.cpu_count() or 1, len(geometries) // 50_000))
    if pieces == 1:
        return shapely.is_valid(geometries)
    with ThreadPoolExecutor(max_workers=pieces) as pool:
        return np.concatenate(list(pool.map(shapely.is_valid, np.array_split(geometries, pieces))))


#: Niceness of the background topology search (see :func:`_in_background`).
_BACKGROUND_NICENESS = 10


def _in_background(function, *args, yielding: bool = False, **kwargs) -> Future:
    """``function(*args, **kwargs)`` on a thread of its own (GEOS lets go of the GIL).

    ``yielding``: the thread (and the threads it starts) run at a lower CPU priority. So does
    the check of a whole delivery's topology: it is long, and a load copying the parcels
    meanwhile waits for the database, which then comes first. Alone, it runs as fast.
    """

    def run():
        if yielding and sys.platform == "linux":  # a thread's niceness is its own on Linux
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), _BACKGROUND_NICENESS)
        return function(*args, **kwargs)

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="landpipe-topology")
    try:
        return pool.submit(run)
    finally:
        pool.shutdown(wait=False)


def topology_of(
    parcels: gpd.GeoDataFrame, *, focus: np.ndarray | None = None, valid: bool = False
) -> list[Finding]:
    """Overlaps, gaps, slivers and edge mismatches among ``parcels`` (see topology.py).

    With ``focus`` (a boolean mask over ``parcels``), only those that involve a focus parcel;
    ``valid`` says the geometries are known to be valid polygons.
    """
    if len(parcels) == 0 or (focus is not None and not np.any(focus)):
        return []
    found = topology.topology_findings(
        parcels, topology.catalogue_params(), focus=focus, valid=valid
    )
    sliver = schemas.rules()["TOPO_SLIVER"].params
    exempt = set(sliver["thin_by_nature"])
    slivers = {f.source_row for f in found if f.rule_code == "TOPO_SLIVER"}
    of_slivers = parcels[parcels[parcel.SOURCE_ROW].isin(slivers)]
    codes = dict(zip(of_slivers[parcel.SOURCE_ROW], of_slivers["land_use_codes"], strict=True))
    return [
        f
        for f in found
        if not (
            f.rule_code == "TOPO_SLIVER"
            and f.area_m2 is not None
            and f.area_m2 >= sliver["min_area_m2"]
            and codes.get(f.source_row)
            and set(codes[f.source_row]) <= exempt
        )
    ]


def _legacy(code: str) -> bool:
    """A code of the old (2014) list, or a legacy parent, that the current list dropped."""
    row = schemas.land_use_codes()[code]
    return row["list_2024"] != "yes"


def invalid_unrepaired(findings: list[Finding], parcels: gpd.GeoDataFrame) -> np.ndarray:
    """Rows whose geometry was refused (invalid and not repaired): their area means nothing."""
    refused = {f.source_row for f in findings if f.rule_code == "GEOM_INVALID"}
    return parcels[parcel.SOURCE_ROW].isin(refused).to_numpy()


def area_tolerance(
    declared: np.ndarray,
    params: dict[str, Any],
    perimeter: np.ndarray | None = None,
    map_scale: np.ndarray | None = None,
) -> np.ndarray:
    """Allowed |computed - declared| in m².

    Where the map scale is known: the area a boundary shifted by half the point accuracy of
    that scale sweeps (``point_accuracy_m[scale] / 2 * perimeter``), at least ``absolute_m2``.
    Elsewhere: ``absolute_m2`` plus ``relative`` of the declared area.
    """
    tolerance = params["absolute_m2"] + params["relative"] * np.abs(declared)
    if perimeter is None or map_scale is None:
        return tolerance
    accuracy = {float(scale): float(metres) for scale, metres in params["point_accuracy_m"].items()}
    known = (
        pd.Series(np.asarray(map_scale, dtype="float64"))
        .map(accuracy)
        .to_numpy(dtype="float64", na_value=np.nan)
    )
    scaled = np.maximum(params["absolute_m2"], known / 2 * perimeter)
    return np.where(np.isnan(known), tolerance, scaled)


def _check_land_use(codes: pd.Series, geometries, eligible, add, where) -> None:
    """Codes in no national list (``ATTR_LAND_USE_UNKNOWN``) or only in the old one (legacy)."""
    rows = np.flatnonzero(eligible)
    if not len(rows):
        return
    lists = land_use_arrow(codes.to_numpy()[rows])
    flat = lists.flatten()
    known_codes = schemas.land_use_codes()
    legacy_codes = [code for code in known_codes if _legacy(code)]
    odd = pc.invert(pc.is_in(flat, value_set=pa.array(list(known_codes), pa.string())))
    odd = pc.or_(odd, pc.is_in(flat, value_set=pa.array(legacy_codes, pa.string())))
    if not pc.any(odd).as_py():
        return
    parents = pc.list_parent_indices(lists).to_numpy()[odd.to_numpy(zero_copy_only=False)]
    for i in rows[np.unique(parents)]:  # rows with a finding, in order
        listed = codes.iloc[i] or []
        unknown = [code for code in listed if code not in known_codes]
        if unknown:
            add(
                "ATTR_LAND_USE_UNKNOWN",
                i,
                f"{where(i)}: land-use code {'+'.join(unknown)} is in no national list",
                _point(geometries[i]),
                codes=unknown,
            )
        legacy = [code for code in listed if code in known_codes and _legacy(code)]
        if legacy:
            add(
                "ATTR_LAND_USE_LEGACY",
                i,
                f"{where(i)}: land-use code {'+'.join(legacy)} is valid only in the old list",
                _point(geometries[i]),
                codes=legacy,
            )


def _check_areas(parcels, geometries, eligible, add, where) -> None:
    params = schemas.rules()["ATTR_AREA_MISMATCH"].params
    declared = parcels["declared_area_m2"].to_numpy(dtype="float64")
    computed = np.full(len(parcels), np.nan)
    perimeter = np.full(len(parcels), np.nan)
    with np.errstate(over="ignore", invalid="ignore"):  # coordinates of 1e300: see below
        computed[eligible] = shapely.area(geometries[eligible])
        perimeter[eligible] = shapely.length(geometries[eligible])
    difference = np.abs(np.round(computed, 1) - declared)
    scale = parcels["map_scale"].astype("float64").to_numpy() if "map_scale" in parcels else None
    tolerance = area_tolerance(declared, params, perimeter, scale)
    with np.errstate(invalid="ignore"):
        # An area too large to be a number (coordinates of 1e300) is no parcel's: the extent
        # check rejects it.
        mismatched = eligible & ~np.isnan(declared) & (difference > tolerance)
        mismatched &= np.isfinite(computed)
    for i in np.flatnonzero(mismatched):
        add(
            "ATTR_AREA_MISMATCH",
            i,
            f"{where(i)}: computed area {computed[i]:.1f} m² differs from the declared "
            f"{declared[i]:.1f} m² by {difference[i]:.1f} m² (tolerance {tolerance[i]:.1f} m²)",
            _point(geometries[i]),
            computed_m2=round(float(computed[i]), 1),
            declared_m2=float(declared[i]),
            tolerance_m2=round(float(tolerance[i]), 2),
        )


def _point(geometry: shapely.Geometry | None) -> shapely.Geometry | None:
    if geometry is None or geometry.is_empty:
        return None
    with np.errstate(over="ignore", invalid="ignore"):  # coordinates of 1e300
        return shapely.point_on_surface(shapely.make_valid(geometry))


def _check_extent(parcels, geometries, eligible, refused, add, where) -> None:
    """Parcels whose point on surface lies outside the (buffered) district of their commune.

    A parcel whose bounding box lies inside the district has its point inside too: the
    points are computed only for the others, a few along the district's edge.
    """
    buffer_m = schemas.rules()["GEOM_OUT_OF_EXTENT"].params["boundary_buffer_m"]
    rows = np.flatnonzero(eligible)
    if not len(rows):
        return
    commune_of, found = pd.factorize(parcels["commune_code"].to_numpy(dtype=object)[rows])
    communes = [str(code) for code in found]
    bounds = shapely.bounds(geometries[rows])
    outside = np.zeros(len(rows), dtype=bool)
    for k, commune in enumerate(communes):
        members = np.flatnonzero(commune_of == k)
        area = _district_area(district_of(commune), buffer_m)
        outside[members] = _outside(
            area, geometries[rows[members]], bounds[members], refused[rows[members]]
        )
    for place in np.flatnonzero(outside):
        i = rows[place]
        commune = communes[commune_of[place]]
        district = district_of(commune)
        scope = f"district {district}" if district else "the province"
        add(
            "GEOM_OUT_OF_EXTENT",
            i,
            f"{where(i)} lies outside {scope} of commune {commune}",
            _point(geometries[i]),
            district=district,
        )


@functools.lru_cache(maxsize=64)
def _district_area(district: str | None, buffer_m: float) -> shapely.Geometry:
    """The buffered district (prepared), made once per process from the boundaries shipped."""
    return boundary(district, buffer_m)


def _outside(area, geometries, bounds, invalid) -> np.ndarray:
    """Whether each geometry's point on surface lies outside ``area`` (prepared)."""
    outside = np.zeros(len(geometries), dtype=bool)
    whole = shapely.box(*bounds[:, :2].min(axis=0), *bounds[:, 2:].max(axis=0))
    if shapely.contains(area, whole):
        return outside
    inside = shapely.contains(area, shapely.box(*bounds.T))
    doubt = np.flatnonzero(~inside)
    if not len(doubt):
        return outside
    shapes = geometries[doubt]
    broken = invalid[doubt]
    with np.errstate(over="ignore", invalid="ignore"):  # coordinates of 1e300 lie outside
        shapes[broken] = shapely.make_valid(shapes[broken])
        outside[doubt] = ~shapely.contains(area, shapely.point_on_surface(shapes))
    return outside
