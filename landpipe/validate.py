"""Validate canonical parcels against the rule catalogue (``schemas/rules.yaml``).

Plain functions over a GeoDataFrame in the storage CRS; no database and no Prefect. Each rule
marks rows and writes findings; a row with any ``reject`` finding is not loaded and is kept
as delivered with its rule codes.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from landpipe import schemas, topology
from landpipe.schemas import parcel
from landpipe.schemas.findings import Finding
from landpipe.sources.crs import boundary, district_of

_REASON_LOCATION = re.compile(r"\[\s*(-?[\d.eE+-]+)\s+(-?[\d.eE+-]+)\s*\]")


@dataclass
class Validation:
    """The outcome of validating a delivery.

    Attributes
    ----------
    parcels
        Rows to load: geometry repaired where needed and made MultiPolygon.
    rejected
        Rows not loaded, geometry as delivered (reprojected), with ``rule_codes``.
    findings
        Every finding, of every severity.
    repaired
        ``source_row`` of the parcels whose geometry was repaired.
    """

    parcels: gpd.GeoDataFrame
    rejected: gpd.GeoDataFrame
    findings: list[Finding]
    repaired: set[int]

    def counts(self) -> dict[str, int]:
        """Findings per rule code."""
        return dict(sorted(Counter(f.rule_code for f in self.findings).items()))


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


def validate(parcels: gpd.GeoDataFrame, prior: list[Finding] | None = None) -> Validation:
    """Run the rule catalogue over ``parcels`` (canonical columns, storage CRS).

    ``prior`` are findings made while reading (text encoding, linework labels); they count
    like the others, and a rejecting one rejects its record.
    """
    rules = schemas.rules()
    findings: list[Finding] = list(prior or [])
    geometries = parcels.geometry.values.copy()
    keys = parcels[list(parcel.KEY)]

    def add(rule_code: str, index: int, message: str, location=None, **detail) -> None:
        row = keys.iloc[index]
        findings.append(
            Finding(
                rule_code=rule_code,
                message=message,
                source_row=int(parcels[parcel.SOURCE_ROW].iloc[index]),
                location=location,
                detail=detail,
                commune_code=None if pd.isna(row.iloc[0]) else str(row.iloc[0]),
                sheet_no=None if pd.isna(row.iloc[1]) else int(row.iloc[1]),
                parcel_no=None if pd.isna(row.iloc[2]) else int(row.iloc[2]),
            )
        )

    def where(index: int) -> str:
        row = int(parcels[parcel.SOURCE_ROW].iloc[index])
        return f"record {row} (parcel {_key_text(keys.iloc[index])})"

    # Geometry: empty, not a polygon, invalid (repaired when it changes no meaning).
    missing = shapely.is_missing(geometries) | shapely.is_empty(geometries)
    for i in np.flatnonzero(missing):
        add("GEOM_EMPTY", i, f"{where(i)} has no geometry")
    type_ids = shapely.get_type_id(geometries)
    polygonal = np.isin(type_ids, (3, 6))  # Polygon, MultiPolygon
    for i in np.flatnonzero(~missing & ~polygonal):
        kind = geometries[i].geom_type
        add(
            "GEOM_NOT_POLYGON",
            i,
            f"{where(i)} is a {kind}, not a parcel polygon",
            shapely.point_on_surface(geometries[i]),
            geometry_type=kind,
        )
    checked = ~missing & polygonal
    invalid = checked & ~shapely.is_valid(geometries)
    repaired: set[int] = set()
    repair_params = rules["GEOM_REPAIRED"].params
    for i in np.flatnonzero(invalid):
        reason = shapely.is_valid_reason(geometries[i])
        location = _invalid_location(reason, geometries[i])
        fixed = _repair(geometries[i], repair_params)
        if fixed is None:
            add(
                "GEOM_INVALID",
                i,
                f"{where(i)} is invalid and not safely repairable: {reason}",
                location,
                reason=reason,
            )
        else:
            geometries[i] = fixed
            repaired.add(int(parcels[parcel.SOURCE_ROW].iloc[i]))
            add(
                "GEOM_REPAIRED",
                i,
                f"{where(i)} was invalid ({reason}) and was repaired",
                location,
                reason=reason,
                method="make_valid",
            )

    # Keys: missing or unreadable, unknown commune, duplicated within the delivery.
    key_missing = keys.isna().any(axis=1).to_numpy()
    for i in np.flatnonzero(key_missing):
        absent = [name for name in parcel.KEY if pd.isna(keys.iloc[i][name])]
        add(
            "ATTR_MISSING",
            i,
            f"{where(i)} lacks {', '.join(absent)} (missing or unreadable)",
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
    _check_extent(parcels, geometries, checked & commune_known, add, where)

    # Land use: every code in the current or the old list.
    known_codes = schemas.land_use_codes()
    for i, codes in enumerate(parcels["land_use_codes"]):
        unknown = [code for code in (codes or []) if code not in known_codes]
        if unknown:
            add(
                "ATTR_LAND_USE_UNKNOWN",
                i,
                f"{where(i)}: land-use code {'+'.join(unknown)} is in no national list",
                _point(geometries[i]),
                codes=unknown,
            )
        legacy = [code for code in (codes or []) if code in known_codes and _legacy(code)]
        if legacy:
            add(
                "ATTR_LAND_USE_LEGACY",
                i,
                f"{where(i)}: land-use code {'+'.join(legacy)} is valid only in the old list",
                _point(geometries[i]),
                codes=legacy,
            )

    # Area: computed (on the TM-3 plane) against declared, beyond the tolerance.
    _check_areas(parcels, geometries, checked & ~invalid_unrepaired(findings, parcels), add, where)

    # Topology, over the parcels that will be loaded (rejected ones have no place in it).
    rejecting = {f.source_row for f in findings if f.severity == "reject"}
    kept = ~parcels[parcel.SOURCE_ROW].isin(rejecting).to_numpy()
    candidates = parcels[kept].set_geometry(
        gpd.GeoSeries(geometries[kept], index=parcels.index[kept], crs=parcels.crs)
    )
    findings.extend(topology_of(candidates))

    reject_rows: dict[int, list[str]] = {}
    for finding in findings:
        if finding.severity == "reject" and finding.source_row is not None:
            reject_rows.setdefault(finding.source_row, []).append(finding.rule_code)
    rejected_mask = parcels[parcel.SOURCE_ROW].isin(reject_rows).to_numpy()
    rejected = parcels[rejected_mask].copy()
    rejected["rule_codes"] = [sorted(set(reject_rows[r])) for r in rejected[parcel.SOURCE_ROW]]
    accepted = parcels[~rejected_mask].copy()
    accepted = accepted.set_geometry(
        gpd.GeoSeries(
            _as_multipolygons(geometries[~rejected_mask]), index=accepted.index, crs=parcels.crs
        )
    )
    return Validation(accepted, rejected, findings, repaired)


def topology_of(parcels: gpd.GeoDataFrame) -> list[Finding]:
    """Overlaps, gaps, slivers and edge mismatches among ``parcels`` (see topology.py)."""
    if len(parcels) == 0:
        return []
    found = topology.topology_findings(parcels, topology.catalogue_params())
    sliver = schemas.rules()["TOPO_SLIVER"].params
    exempt = set(sliver["thin_by_nature"])
    codes = dict(zip(parcels[parcel.SOURCE_ROW], parcels["land_use_codes"], strict=True))
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
    accuracy = {int(scale): float(metres) for scale, metres in params["point_accuracy_m"].items()}
    known = np.array([accuracy.get(int(s), np.nan) if s == s else np.nan for s in map_scale])
    scaled = np.maximum(params["absolute_m2"], known / 2 * perimeter)
    return np.where(np.isnan(known), tolerance, scaled)


def _check_areas(parcels, geometries, eligible, add, where) -> None:
    params = schemas.rules()["ATTR_AREA_MISMATCH"].params
    declared = parcels["declared_area_m2"].to_numpy(dtype="float64")
    computed = np.full(len(parcels), np.nan)
    computed[eligible] = shapely.area(geometries[eligible])
    perimeter = np.full(len(parcels), np.nan)
    perimeter[eligible] = shapely.length(geometries[eligible])
    difference = np.abs(np.round(computed, 1) - declared)
    scale = parcels["map_scale"].astype("float64").to_numpy() if "map_scale" in parcels else None
    tolerance = area_tolerance(declared, params, perimeter, scale)
    with np.errstate(invalid="ignore"):
        mismatched = eligible & ~np.isnan(declared) & (difference > tolerance)
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


def _as_multipolygons(geometries: np.ndarray) -> np.ndarray:
    """Polygons wrapped as one-part MultiPolygons (the register stores MultiPolygon)."""
    out = geometries.copy()
    single = np.flatnonzero(shapely.get_type_id(out) == 3)
    out[single] = shapely.multipolygons(out[single], indices=np.arange(len(single)))
    return out


def _point(geometry: shapely.Geometry | None) -> shapely.Geometry | None:
    if geometry is None or geometry.is_empty:
        return None
    return shapely.point_on_surface(shapely.make_valid(geometry))


def _check_extent(parcels, geometries, eligible, add, where) -> None:
    buffer_m = schemas.rules()["GEOM_OUT_OF_EXTENT"].params["boundary_buffer_m"]
    communes = parcels["commune_code"].to_numpy()
    for commune in pd.unique(communes[eligible]):
        rows = np.flatnonzero(eligible & (communes == commune))
        district = district_of(commune)
        area = boundary(district, buffer_m)
        points = shapely.point_on_surface(shapely.make_valid(geometries[rows]))
        outside = ~shapely.contains(area, points)
        scope = f"district {district}" if district else "the province"
        for i in rows[outside]:
            add(
                "GEOM_OUT_OF_EXTENT",
                i,
                f"{where(i)} lies outside {scope} of commune {commune}",
                _point(geometries[i]),
                district=district,
            )
