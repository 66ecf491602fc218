"""Linework deliveries made from a generated commune: boundary lines plus label texts.

:func:`make_drawing` turns polygon parcels (``landpipe.synth``) into what a surveyor's drawing
holds: the unique shared edges of the coverage merged into lines between junctions, and inside
each parcel three texts, the parcel number at the centre of its largest inscribed circle and
the land-use codes and the area above and below it (or one combined text). A drawing can carry
one of :data:`FAULTS`. The writers put a drawing into a DXF, a DGN v7 and a pair of Shapefiles
(lines + attribute points).

How GDAL 3.12 writes them (found by trial, see ``test_linework.py``):

- DXF: a frame with a ``Layer`` column becomes entities on those layers; a point whose
  ``OGR_STYLE`` field is ``LABEL(t:"...")`` becomes an MTEXT (line breaks written as ``\\P``);
  a ``Text`` field is ignored on writing.
- DGN: the driver has one layer ``elements`` whose fields (``Type``, ``Level``, ...,
  ``Text``) cannot be created, so pyogrio cannot write a frame with a ``Level`` column. It can
  append to an existing file without creating fields, and then sets each field by its position:
  the file is first created empty, then the features are appended with the layer's own fields
  in its own order. A point with a ``Text`` value becomes a text element. Coordinates are
  stored as whole units of resolution, cut (not rounded) towards zero; ``ORIGIN`` is *added*
  to a coordinate before scaling, so a design plane centred on (x, y) needs ``ORIGIN=-x,-y``.
  At 10 000 units per metre the error is under 0.1 mm within ±200 km of that centre.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely

from landpipe import synth

#: The faults a drawing can carry, and the rule each should raise.
FAULTS = {
    "unlabelled": "LINE_UNLABELLED",
    "label_outside": "LINE_LABEL_OUTSIDE",
    "label_conflict": "LINE_LABEL_CONFLICT",
    "dangling": "LINE_DANGLING",
}
#: DGN levels (TT 25/2014 Phụ lục 18) by what they hold.
DGN_LEVELS = {"boundary": 10, "parcel_no": 11, "land_use": 2, "area": 4, "combined": 11}
#: DXF layer names by what they hold; ``"10"``, ``"11"``... are read as well.
DXF_LAYERS = {
    "boundary": "RANHTHUA",
    "parcel_no": "SOTHUA",
    "land_use": "LOAIDAT",
    "area": "DIENTICH",
    "combined": "NHANTHUA",
}
#: Units of resolution per metre in the DGN files written here (0.1 mm).
DGN_UOR_PER_METRE = 10_000
_OUTSIDE_OFFSET_M = 25.0


def commune(n_parcels: int = 300, seed: int = synth.DEFAULT_SEED) -> gpd.GeoDataFrame:
    """A generated commune on one map sheet, without faults: the truth a drawing is made of."""
    return synth.generate_parcels(
        synth.DEFAULT_COMMUNE_CODE, n_parcels=n_parcels, seed=seed, n_sheets=1, faults=False
    )


def boundary_lines(polygons: np.ndarray) -> np.ndarray:
    """The unique edges of a coverage, merged into lines from junction to junction."""
    coords, ring = shapely.get_coordinates(shapely.get_rings(polygons), return_index=True)
    same = ring[1:] == ring[:-1]
    start, end = coords[:-1][same], coords[1:][same]
    flip = (start[:, 0] > end[:, 0]) | ((start[:, 0] == end[:, 0]) & (start[:, 1] > end[:, 1]))
    segments = np.where(flip[:, None], np.hstack([end, start]), np.hstack([start, end]))
    segments = np.unique(segments, axis=0).reshape(-1, 2, 2)
    merged = shapely.line_merge(shapely.multilinestrings(shapely.linestrings(segments)))
    return shapely.get_parts(merged)


def area_text(area: float, style: int) -> str:
    """An area as surveyors write it: ``125,4``, ``125.4`` or ``125,4 m2`` by ``style`` % 3."""
    decimal = f"{area:.1f}"
    return (decimal.replace(".", ","), decimal, decimal.replace(".", ",") + " m2")[style % 3]


@dataclass(frozen=True)
class Drawing:
    """A drawing: boundary lines and label texts, in the CRS of the parcels it was made of.

    ``labels`` has one row per text: ``group`` (the parcel row, or -1 for a label added by a
    fault), ``role`` (``parcel_no``, ``land_use``, ``area`` or ``combined``), ``text``,
    ``value`` and the point. ``fault_at`` is where the fault's finding should point, and
    ``fault_row`` the truth row it concerns.
    """

    lines: np.ndarray
    labels: gpd.GeoDataFrame
    fault: str | None = None
    fault_at: shapely.Geometry | None = None
    fault_row: int | None = None
    fault_value: int | None = None


def make_drawing(
    parcels: gpd.GeoDataFrame, *, fault: str | None = None, combined: str | None = None
) -> Drawing:
    """The drawing of ``parcels`` (see the module docstring).

    Parameters
    ----------
    fault
        One of :data:`FAULTS`: ``unlabelled`` drops one parcel's number label,
        ``label_outside`` adds a number label outside every parcel, ``label_conflict`` adds a
        second, different number inside one parcel, ``dangling`` adds a stub line from a
        parcel corner into the parcel.
    combined
        Write each parcel's number, codes and area as one text joined by this separator
        (``"\\n"`` or ``"/"``) instead of three texts.
    """
    polygons = parcels.geometry.values.to_numpy()
    circle = shapely.maximum_inscribed_circle(polygons)
    centre = shapely.get_coordinates(shapely.get_point(circle, 0))
    radius = shapely.length(circle)[:, None]
    number = parcels["parcel_no"].to_numpy(dtype=np.int64)
    codes = np.array(["+".join(c) for c in parcels["land_use_codes"]], dtype=object)
    areas = parcels["declared_area_m2"].to_numpy()
    rows = np.arange(len(parcels))
    area_texts = np.array([area_text(a, i) for i, a in enumerate(areas)], dtype=object)
    if combined is not None:
        texts = [
            f"{n}{combined}{c}{combined}{a}"
            for n, c, a in zip(number, codes, area_texts, strict=True)
        ]
        labels = pd.DataFrame(
            {"group": rows, "role": "combined", "text": texts, "value": None}
        ).assign(x=centre[:, 0], y=centre[:, 1])
    else:
        offsets = {"parcel_no": 0.0, "land_use": 0.5, "area": -0.5}
        values = {"parcel_no": number, "land_use": codes, "area": areas}
        shown = {"parcel_no": number.astype(str), "land_use": codes, "area": area_texts}
        labels = pd.concat(
            [
                pd.DataFrame(
                    {
                        "group": rows,
                        "role": role,
                        "text": shown[role],
                        "value": list(values[role]),
                        "x": centre[:, 0],
                        "y": centre[:, 1] + offset * radius[:, 0],
                    }
                )
                for role, offset in offsets.items()
            ]
        ).sort_values(["group"], kind="stable", ignore_index=True)
    drawing = Drawing(boundary_lines(polygons), _frame(labels, parcels.crs))
    return _with_fault(drawing, parcels, fault, centre, radius[:, 0]) if fault else drawing


def _frame(labels: pd.DataFrame, crs: object) -> gpd.GeoDataFrame:
    geometry = shapely.points(labels["x"].to_numpy(), labels["y"].to_numpy())
    return gpd.GeoDataFrame(
        labels.drop(columns=["x", "y"]).reset_index(drop=True), geometry=geometry, crs=crs
    )


def _with_fault(
    drawing: Drawing,
    parcels: gpd.GeoDataFrame,
    fault: str,
    centre: np.ndarray,
    radius: np.ndarray,
) -> Drawing:
    if fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}; known: {', '.join(FAULTS)}")
    labels = drawing.labels
    row = len(parcels) // 2
    number = int(parcels["parcel_no"].iloc[row])
    polygon = parcels.geometry.iloc[row]
    if fault == "unlabelled":
        keep = ~((labels["group"] == row) & labels["role"].isin(["parcel_no", "combined"]))
        return replace(
            drawing,
            labels=labels[keep].reset_index(drop=True),
            fault=fault,
            fault_at=polygon,
            fault_row=row,
        )
    if fault in ("label_outside", "label_conflict"):
        if fault == "label_outside":
            xmin, _, _, ymax = parcels.total_bounds
            at = shapely.Point(xmin - _OUTSIDE_OFFSET_M, ymax + _OUTSIDE_OFFSET_M)
            value, fault_row = 9999, None
        else:
            at = shapely.Point(centre[row, 0] + 0.5 * radius[row], centre[row, 1])
            value, fault_row = number + 1, row
        extra = gpd.GeoDataFrame(
            {"group": [-1], "role": ["parcel_no"], "text": [str(value)], "value": [value]},
            geometry=[at],
            crs=labels.crs,
        )
        return replace(
            drawing,
            labels=pd.concat([labels, extra], ignore_index=True),
            fault=fault,
            fault_at=at,
            fault_row=fault_row,
            fault_value=value,
        )
    # dangling: a stub from the corner of a convex parcel halfway to its centre
    convex = np.flatnonzero(
        np.isclose(
            shapely.area(parcels.geometry.values),
            shapely.area(shapely.convex_hull(parcels.geometry.values)),
        )
    )
    row = int(convex[np.argmin(np.abs(convex - row))])
    corner = np.asarray(parcels.geometry.iloc[row].exterior.coords[0])
    stub = shapely.LineString([corner, (corner + centre[row]) / 2])
    return replace(
        drawing,
        lines=np.append(drawing.lines, stub),
        fault=fault,
        fault_at=stub,
        fault_row=row,
    )


def _as_drawing(parcels_or_drawing: gpd.GeoDataFrame | Drawing) -> Drawing:
    if isinstance(parcels_or_drawing, Drawing):
        return parcels_or_drawing
    return make_drawing(parcels_or_drawing)


def _style(text: str) -> str:
    """An OGR LABEL style string: the DXF writer makes it an MTEXT entity."""
    quoted = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'LABEL(f:"Arial",s:1.5g,t:"{quoted}")'


def write_dxf(
    parcels: gpd.GeoDataFrame | Drawing, path: str | Path, *, layers: dict[str, str] | None = None
) -> Path:
    """Write a drawing (or the drawing of ``parcels``) as a DXF; return its path.

    ``layers`` maps ``boundary``, ``parcel_no``, ``land_use``, ``area`` and ``combined`` to
    layer names (default :data:`DXF_LAYERS`).
    """
    drawing, names, path = _as_drawing(parcels), layers or DXF_LAYERS, Path(path)
    labels = drawing.labels
    frame = gpd.GeoDataFrame(
        {
            "Layer": [names["boundary"]] * len(drawing.lines)
            + [names[role] for role in labels["role"]],
            "OGR_STYLE": [None] * len(drawing.lines) + [_style(t) for t in labels["text"]],
        },
        geometry=np.concatenate([drawing.lines, labels.geometry.values.to_numpy()]),
        crs=labels.crs,
    )
    path.unlink(missing_ok=True)
    pyogrio.write_dataframe(frame, path, driver="DXF")
    return path


def write_dgn(parcels: gpd.GeoDataFrame | Drawing, path: str | Path) -> Path:
    """Write a drawing (or the drawing of ``parcels``) as a DGN v7; return its path.

    Lines on level 10, parcel numbers (and combined labels) on 11, land-use codes on 2 and
    areas on 4; metres with 10 000 units of resolution each, the design plane centred on the
    drawing (whole kilometres).
    """
    drawing, path = _as_drawing(parcels), Path(path)
    labels = drawing.labels
    xmin, ymin, xmax, ymax = shapely.total_bounds(drawing.lines)
    centre_x, centre_y = round((xmin + xmax) / 2, -3), round((ymin + ymax) / 2, -3)
    options = {
        "MASTER_UNIT_NAME": "m",
        "SUB_UNIT_NAME": "mm",
        "SUB_UNITS_PER_MASTER_UNIT": 1000,
        "UOR_PER_SUB_UNIT": DGN_UOR_PER_METRE // 1000,
        "ORIGIN": f"{-centre_x:.0f},{-centre_y:.0f},0",
    }
    path.unlink(missing_ok=True)
    empty = gpd.GeoDataFrame(geometry=gpd.GeoSeries([], crs=None))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "'crs' was not provided", UserWarning)  # DGN has none
        pyogrio.write_dataframe(
            empty, path, driver="DGN", layer="elements", dataset_options=options
        )
    fields = list(pyogrio.read_info(path, layer="elements")["fields"])
    wanted = fields[: fields.index("Text") + 1]  # set by position when appending: keep order
    n_lines, n = len(drawing.lines), len(drawing.lines) + len(labels)
    columns: dict[str, object] = {name: np.zeros(n, dtype="int32") for name in wanted}
    columns["Level"] = np.array(
        [DGN_LEVELS["boundary"]] * n_lines + [DGN_LEVELS[r] for r in labels["role"]],
        dtype="int32",
    )
    columns["Text"] = [None] * n_lines + list(labels["text"])
    # GDAL cuts coordinates toward zero to whole units: add half a unit away from the origin
    # so that the cut rounds instead, and coordinates on the unit grid come back exactly.
    half_unit = 0.5 / DGN_UOR_PER_METRE
    centre = np.array([centre_x, centre_y])
    geometries = shapely.transform(
        np.concatenate([drawing.lines, labels.geometry.values.to_numpy()]),
        lambda xy: xy + np.sign(xy - centre) * half_unit,
    )
    frame = gpd.GeoDataFrame(columns, geometry=geometries)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "'crs' was not provided", UserWarning)
        pyogrio.write_dataframe(frame, path, driver="DGN", layer="elements", append=True)
    return path


def write_line_shapefiles(
    parcels: gpd.GeoDataFrame | Drawing, folder: str | Path
) -> tuple[Path, Path]:
    """Write a drawing as ``lines.shp`` and ``labels.shp`` in ``folder``; return both paths.

    The label Shapefile has one point per parcel (at its number label, or the first of its
    texts) with the ViLIS fields ``SoThuTuThua``, ``KyHieuMucDichSuDung`` and ``DienTich``.
    """
    drawing, folder = _as_drawing(parcels), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    labels = drawing.labels
    crs = labels.crs
    lines_path, labels_path = folder / "lines.shp", folder / "labels.shp"
    pyogrio.write_dataframe(
        gpd.GeoDataFrame({"id": np.arange(len(drawing.lines))}, geometry=drawing.lines, crs=crs),
        lines_path,
        layer_options={"DBF_DATE_LAST_UPDATE": synth.DBF_DATE},
    )
    key = np.where(labels["group"] >= 0, labels["group"], -1 - np.arange(len(labels)))
    grouped = labels.assign(key=key).groupby("key", sort=False)
    first = grouped.head(1).set_index("key")

    def by_role(role: str) -> pd.Series:
        picked = labels.assign(key=key)[labels["role"] == role].drop_duplicates("key")
        return picked.set_index("key")["value"].reindex(first.index)

    points = gpd.GeoDataFrame(
        {
            "SoThuTuThua": pd.array(by_role("parcel_no").to_numpy(), dtype="Int64"),
            "KyHieuMucDichSuDung": by_role("land_use").to_numpy(dtype=object),
            "DienTich": by_role("area").to_numpy(dtype="float64"),
        },
        geometry=first.geometry.values,
        crs=crs,
    )
    with warnings.catch_warnings():  # field names cut to 10 characters, as in real deliveries
        warnings.filterwarnings("ignore", "Normalized/laundered field name", RuntimeWarning)
        pyogrio.write_dataframe(
            points,
            labels_path,
            encoding="UTF-8",
            layer_options={"DBF_DATE_LAST_UPDATE": synth.DBF_DATE},
        )
    return lines_path, labels_path
