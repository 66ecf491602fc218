"""Parcels drawn as boundary lines plus label texts (DGN, DXF, line Shapefiles): make polygons.

Survey drawings often hold a parcel as the lines around it and a few texts inside it: the
parcel number, the land-use code(s) and the area, each a separate text told apart by its form
(and, in a drawing, by its level or layer). :func:`read_linework` closes the lines into faces,
puts each label into the face that contains it and reports what does not fit:

``LINE_UNLABELLED``
    a face without a parcel-number label (it is still returned, with ``parcel_no`` missing);
``LINE_LABEL_OUTSIDE``
    a label in no face;
``LINE_LABEL_CONFLICT``
    a face with two parcel numbers, or two land-use or area labels, that disagree;
``LINE_DANGLING``
    a boundary line that bounds no face (a free end, or a bridge between faces).

How GDAL presents the drawings (3.12): a DXF is one layer ``entities`` with the fields
``Layer``, ``Text``, ...; TEXT and MTEXT entities are points with their text in ``Text`` (MTEXT
line breaks as ``\\n``). A DGN v7 is one layer ``elements`` with ``Level`` (0-63), ``Text``,
...; text elements are points. Closed shapes may come as polygons; their rings count as lines.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
import unicodedata
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pyogrio.errors
import shapely

from landpipe import schemas
from landpipe.errors import LayerError, SourceError
from landpipe.schemas.findings import Finding
from landpipe.sources.fields import (
    match_fields,
    normalise_name,
    to_area,
    to_commune_code,
    to_int,
    to_land_use_codes,
)
from landpipe.sources.files import LINES, POLYGONS

UNLABELLED = "LINE_UNLABELLED"
LABEL_OUTSIDE = "LINE_LABEL_OUTSIDE"
LABEL_CONFLICT = "LINE_LABEL_CONFLICT"
DANGLING = "LINE_DANGLING"

#: Drawing formats by suffix; any file of these is linework.
CAD_SUFFIXES = {".dxf": "DXF", ".dgn": "DGN"}
#: Output columns, in order (plus ``geometry``).
COLUMNS = (
    "commune_code",
    "sheet_no",
    "parcel_no",
    "land_use_codes",
    "declared_area_m2",
    "label_texts",
)
#: Attributes a label can give its parcel, in the order conflicts are reported.
LABEL_FIELDS = ("parcel_no", "land_use_codes", "declared_area_m2", "sheet_no", "commune_code")
#: Normalised names of a label layer's text field (see ``fields.normalise_name``).
TEXT_FIELD_NAMES = ("text", "label", "nhan", "noidung", "textstring")


def _layer_key(value: Any) -> str:
    """A level or layer name as compared: ``10``, ``10.0`` and ``"10"`` alike, and names
    without case, accents, spaces or underscores (``Ranh thửa`` = ``RANH_THUA``)."""
    if isinstance(value, (int, np.integer)) or (
        isinstance(value, (float, np.floating)) and float(value).is_integer()
    ):
        return str(int(value))
    return normalise_name(str(value))


@dataclass(frozen=True)
class LineworkLayers:
    """Which features are boundaries and which are labels. Defaults per format.

    Names are DGN levels (as strings, ``"10"``) or DXF layer names, compared without case,
    accents, spaces or underscores.

    Attributes
    ----------
    boundary
        Levels or layers whose lines (and polygon rings) are parcel boundaries.
    label
        Levels or layers whose texts label parcels. The hint sets below are added to it.
    land_use_label
        Label layers holding land-use codes: a text of 2-4 letter words there is read as codes
        even when a code is not in the code list (so validation can flag it).
    area_label
        Label layers holding areas: a whole number there is an area, not a parcel number.
    note_label
        Label layers whose texts are kept in ``label_texts`` but never read as an attribute
        (DGN level 29, the legal land type, may rightly differ from the current one).
    """

    boundary: frozenset[str]
    label: frozenset[str]
    land_use_label: frozenset[str] = frozenset()
    area_label: frozenset[str] = frozenset()
    note_label: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for item in fields(self):
            object.__setattr__(
                self, item.name, frozenset(_layer_key(v) for v in getattr(self, item.name))
            )
        hints = self.land_use_label | self.area_label | self.note_label
        object.__setattr__(self, "label", self.label | hints)

    @classmethod
    def default(cls, driver: str) -> LineworkLayers:
        """The usual levels (DGN, TT 25/2014 Phụ lục 18) or layer names (DXF) of ``driver``.

        Any other driver gets empty sets: its line features are all boundaries and its point
        features all labels (see :func:`read_linework`).
        """
        if driver.upper() == "DGN":
            return cls(
                boundary=frozenset({"10"}),
                label=frozenset({"11", "2", "4", "29"}),
                land_use_label=frozenset({"2"}),
                area_label=frozenset({"4"}),
                note_label=frozenset({"29"}),
            )
        if driver.upper() == "DXF":
            return cls(
                boundary=frozenset({"10", "RANHTHUA", "THUA", "RANH_THUA"}),
                label=frozenset({"11", "2", "4", "SOTHUA", "NHANTHUA", "LOAIDAT", "DIENTICH"}),
                land_use_label=frozenset({"2", "LOAIDAT"}),
                area_label=frozenset({"4", "DIENTICH"}),
            )
        return cls(boundary=frozenset(), label=frozenset())


# --------------------------------------------------------------------------- detection


def is_linework(path: str | Path, layer: str | None = None) -> bool:
    """True when the file is DGN/DXF, or a Shapefile/GeoPackage layer of (multi)lines.

    Without ``layer``, a file of several layers is linework when it holds a line layer and no
    polygon layer (polygons are read as parcels directly).

    Raises
    ------
    SourceError
        GDAL cannot open the file.
    """
    path = Path(path)
    if path.suffix.lower() in CAD_SUFFIXES:
        return True
    try:
        layers = pyogrio.list_layers(path)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, OSError) as err:
        raise SourceError(f"{path}: not a readable vector file ({err})") from err
    types = {str(name): str(kind) for name, kind in layers}
    if layer is not None:
        return types.get(layer) in LINES
    kinds = set(types.values())
    return bool(kinds & LINES) and not kinds & POLYGONS


# --------------------------------------------------------------------------- label texts

_PART_BREAKS = re.compile(r"\\P|[\r\n/|]+")
_INTEGER = re.compile(r"\d+")
_AREA = re.compile(
    r"(?P<prefix>(?:S|DT)\s*[=:]\s*)?(?P<number>\d(?:[\d.,]*\d)?)\s*(?P<unit>m2|m²|m\^2)?",
    re.IGNORECASE,
)
_UNIT_SPACE = re.compile(r"(?<=\d)\s+(?=(?:m2|m²|m\^2)(?!\w))", re.IGNORECASE)
_CODE_SEPARATORS = re.compile(r"[\s+,;&-]+")
_CODE_WORD = re.compile(r"[A-Z]{2,4}")
_TOKEN_TRIM = ",;:."


@functools.cache
def _known_codes() -> frozenset[str]:
    return frozenset(code.upper() for code in schemas.land_use_codes())


def _land_use(part: str, *, any_letters: bool) -> str | None:
    """``"ODT+CLN"`` when every word of ``part`` is a land-use code; None otherwise."""
    words = [w for w in _CODE_SEPARATORS.split(part.upper()) if w]
    if not words:
        return None
    known = _known_codes()
    if all(w in known for w in words) or (
        any_letters and all(_CODE_WORD.fullmatch(w) for w in words)
    ):
        return "+".join(words)
    return None


def _classify_part(part: str, hint: str | None) -> tuple[str, Any] | None:
    """The one attribute a whole text part states, by its form; None when it is no attribute."""
    if _INTEGER.fullmatch(part):
        if hint == "area":
            return ("declared_area_m2", float(part))
        return ("parcel_no", int(part))
    area = _AREA.fullmatch(part)
    if area and (area["prefix"] or area["unit"] or re.search(r"[.,]", area["number"])):
        value = to_area(area["number"])
        if value is not None:
            return ("declared_area_m2", value)
    codes = _land_use(part, any_letters=hint == "land_use")
    if codes is not None:
        return ("land_use_codes", codes)
    return None


def parse_label(text: str, hint: str | None = None) -> list[tuple[str, Any]]:
    """The attributes a label text states, told apart by their form.

    A whole number is a parcel number (an area when ``hint`` is ``"area"``); a number with a
    decimal comma or point, or with ``m2``/``m²``, is an area (``"125,4"`` -> 125.4); words
    that are all land-use codes, joined by ``+``, ``,`` or spaces, are land-use codes
    (``"odt+cln"`` -> ``"ODT+CLN"``; with ``hint="land_use"`` any 2-4 letter words count).
    A combined label is split at line breaks, ``/`` and ``|`` (``"15/ODT/125,4"``), and a part
    of several words is read word by word when every word is an attribute (``"15 ODT 125,4"``).
    The land-use codes of one text are one value (``"ODT/CLN"`` -> ``"ODT+CLN"``). Text that is
    none of these (``"Thửa 7"``) gives nothing.

    Returns
    -------
    list of (field, value)
        ``("parcel_no", int)``, ``("declared_area_m2", float)`` in the order of the text, then
        ``("land_use_codes", str)``.
    """
    if hint == "note":
        return []
    found: list[tuple[str, Any]] = []
    for raw in _PART_BREAKS.split(unicodedata.normalize("NFC", text)):
        part = raw.strip().strip(_TOKEN_TRIM).strip()
        if not part:
            continue
        whole = _classify_part(part, hint)
        if whole is not None:
            found.append(whole)
            continue
        words = [w.strip(_TOKEN_TRIM) for w in _UNIT_SPACE.sub("", part).split()]
        items = [_classify_part(w, hint) for w in words if w]
        if len(items) > 1 and all(item is not None for item in items):
            found.extend(item for item in items if item is not None)
    codes = [value for name, value in found if name == "land_use_codes"]
    found = [item for item in found if item[0] != "land_use_codes"]
    if codes:
        found.append(("land_use_codes", "+".join(dict.fromkeys("+".join(codes).split("+")))))
    return found


# --------------------------------------------------------------------------- reading


def _layer_column(frame: pd.DataFrame, driver: str | None) -> pd.Series | None:
    """Each feature's level or layer key, or None when the frame has no such field."""
    wanted = {"DXF": "Layer", "DGN": "Level"}.get((driver or "").upper())
    names = [wanted] if wanted else ["Layer", "Level"]
    for name in names:
        column = next((c for c in frame.columns if str(c).lower() == name.lower()), None)
        if column is not None:
            values = frame[column].astype(object)
            names = {v: "" if pd.isna(v) else _layer_key(v) for v in values.unique()}
            return values.map(names)
    return None


def _hints(keys: pd.Series | None, layers: LineworkLayers, n: int) -> np.ndarray:
    """Per label, the role its layer gives it: ``area``, ``land_use``, ``note`` or None."""
    hint = np.full(n, None, dtype=object)
    if keys is None:
        return hint
    for name, role in (
        (layers.area_label, "area"),
        (layers.land_use_label, "land_use"),
        (layers.note_label, "note"),
    ):
        hint[keys.isin(name).to_numpy()] = role
    return hint


def _exploded_lines(geometries: np.ndarray) -> np.ndarray:
    """Every line of ``geometries`` (parts of multi-geometries, rings of polygons), in 2D."""
    parts = shapely.force_2d(np.asarray(geometries, dtype=object))
    parts = parts[~(shapely.is_missing(parts) | shapely.is_empty(parts))]
    for _ in range(4):  # collections of multi-geometries nest a few levels at most
        kind = shapely.get_type_id(parts)
        polygonal = np.isin(kind, (3, 6))
        if polygonal.any():
            parts = np.concatenate([parts[~polygonal], shapely.boundary(parts[polygonal])])
        elif not np.isin(kind, (4, 5, 7)).any():
            break
        parts = shapely.get_parts(parts)
    kind = shapely.get_type_id(parts)
    lines = parts[(kind == 1) | (kind == 2)]
    return lines[shapely.length(lines) > 0]


def _components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each of ``n`` items linked in pairs (a, b), the lowest index of its group."""
    label = np.arange(n)
    while True:
        low = np.minimum(label[a], label[b])
        new = label.copy()
        np.minimum.at(new, a, low)
        np.minimum.at(new, b, low)
        new = new[new]
        if np.array_equal(new, label):
            return label
        label = new


def close_gaps(lines: np.ndarray, tolerance: float) -> np.ndarray:
    """Lines with ends closer than ``tolerance`` to another line moved onto it.

    Ends near each other move to one of them (the first drawn), a line's own two ends too; a
    line that an end stops short of gets that end as a new vertex (``shapely.snap``). An end
    that already crosses the line it is near is an overshoot and stays: polygonising drops its
    stub. Lines with no gap are returned unchanged, vertex for vertex.
    """
    if tolerance <= 0 or len(lines) == 0:
        return lines
    result = lines.copy()
    ends = np.concatenate([shapely.get_point(lines, 0), shapely.get_point(lines, -1)])
    owner = np.tile(np.arange(len(lines)), 2)
    xy = shapely.get_coordinates(ends)
    a, b = shapely.STRtree(ends).query(ends, predicate="dwithin", distance=tolerance)
    near = (a < b) & np.any(xy[a] != xy[b], axis=1)
    target = xy[_components(len(ends), a[near], b[near])]
    moved = np.any(target != xy, axis=1)
    if moved.any():  # shapely.snap would not move an end onto the line's own other end
        coords, index = shapely.get_coordinates(lines, return_index=True)
        count = shapely.get_num_coordinates(lines)
        first = np.cumsum(count) - count
        coords[np.concatenate([first, first + count - 1])[moved]] = target[moved]
        changed = np.unique(owner[moved])
        keep = np.isin(index, changed)
        result[changed] = shapely.linestrings(
            coords[keep], indices=np.searchsorted(changed, index[keep])
        )
    ends = shapely.points(target)
    end, line = shapely.STRtree(result).query(ends, predicate="dwithin", distance=tolerance)
    short = (line != owner[end]) & (shapely.distance(ends[end], result[line]) > 0)
    end, line = end[short], line[short]
    # an end whose last stretch crosses the line overshoots it: nothing to close
    last_stretch = shapely.intersection(result[owner[end]], shapely.buffer(ends[end], tolerance))
    undershoot = ~shapely.intersects(last_stretch, result[line])
    end, line = end[undershoot], line[undershoot]
    if len(line):
        order = np.argsort(line, kind="stable")
        which, group = np.unique(line[order], return_inverse=True)
        nodes = shapely.multipoints(target[end[order]], indices=group)
        result[which] = shapely.snap(result[which], nodes, tolerance)
    return result[shapely.length(result) > 0]


@dataclass
class _Faces:
    polygons: np.ndarray
    dangles: list[tuple[shapely.LineString, str, list[list[float]]]]


def _faces(lines: np.ndarray, tolerance: float) -> _Faces:
    """Polygons formed by the noded lines, north to south then west to east, and the lines
    that bound none (longer than ``tolerance``: shorter ones are overshoots)."""
    # noded, then merged through every node joining just two edges: an edge runs from
    # junction to junction, so a loose line is reported whole, once
    edges = shapely.get_parts(shapely.line_merge(shapely.union_all(lines)))
    polygons, cuts, dangles, invalid = shapely.polygonize_full(edges)
    polygons = shapely.get_parts(polygons)
    where = shapely.get_coordinates(shapely.point_on_surface(polygons))
    polygons = polygons[np.lexsort((where[:, 0], -where[:, 1]))] if len(polygons) else polygons
    edge_tree = shapely.STRtree(edges)
    loose: list[tuple[shapely.LineString, str, list[list[float]]]] = []
    for reason, pieces in (("dangle", dangles), ("cut_edge", cuts), ("invalid_ring", invalid)):
        chains = shapely.get_parts(pieces)
        chains = chains[shapely.length(chains) > tolerance]
        if not len(chains):
            continue
        ends = np.stack([shapely.get_point(chains, 0), shapely.get_point(chains, -1)], axis=1)
        hits, _ = edge_tree.query(ends.ravel(), predicate="intersects")
        free = (np.bincount(hits, minlength=ends.size) <= 1).reshape(ends.shape)
        closed = shapely.is_closed(chains)
        for chain, chain_ends, chain_free, ring in zip(chains, ends, free, closed, strict=True):
            points = [] if ring else [p for p, f in zip(chain_ends, chain_free, strict=True) if f]
            coords = [[round(p.x, 3), round(p.y, 3)] for p in points]
            loose.append((chain, reason, coords))
    loose.sort(key=lambda item: (-item[0].centroid.y, item[0].centroid.x))
    return _Faces(polygons, loose)


@dataclass
class _Labels:
    """Label points, one row each, and what each states (one row per attribute)."""

    points: pd.DataFrame  # text, source, feature, layer, geometry
    items: pd.DataFrame  # label, field, value


def _text_column(frame: pd.DataFrame) -> str | None:
    return next((c for c in frame.columns if normalise_name(str(c)) in TEXT_FIELD_NAMES), None)


def _text(value: Any) -> str | None:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    text = unicodedata.normalize("NFC", str(value)).strip()
    return text or None


def _label_rows(
    frame: gpd.GeoDataFrame,
    *,
    source: str,
    keys: pd.Series | None,
    layers: LineworkLayers,
    filter_layers: bool,
    attributes: bool,
) -> tuple[pd.DataFrame, list[tuple[int, str, Any]]]:
    """Label points of one frame and their (row, field, value) items."""
    geometry = shapely.force_2d(frame.geometry.values.to_numpy())
    point = shapely.get_type_id(geometry) == 0
    if filter_layers and keys is not None:
        point &= keys.isin(layers.label).to_numpy()
    text_name = _text_column(frame)
    texts = (
        frame[text_name].map(_text).to_numpy(dtype=object)
        if text_name
        else np.full(len(frame), None, dtype=object)
    )
    mapping = (
        {
            k: v
            for k, v in match_fields([str(c) for c in frame.columns]).items()
            if k in LABEL_FIELDS
        }
        if attributes
        else {}
    )
    has_text = np.array([t is not None for t in texts], dtype=bool)
    if mapping:
        carried = frame[list(mapping.values())].notna().any(axis=1).to_numpy()
        keep = np.flatnonzero(point & (has_text | carried))
    else:
        keep = np.flatnonzero(point & has_text)
    hint = _hints(keys, layers, len(frame))[keep] if filter_layers else [None] * len(keep)
    rows = pd.DataFrame(
        {
            "text": texts[keep],
            "source": source,
            "feature": frame.index.to_numpy()[keep],
            "layer": keys.to_numpy()[keep] if keys is not None else None,
            "geometry": geometry[keep],
        }
    )
    items: list[tuple[int, str, Any]] = []
    parsed: dict[tuple[str, Any], list[tuple[str, Any]]] = {}
    for row, (text, role) in enumerate(zip(rows["text"], hint, strict=True)):
        if text is not None:
            if (text, role) not in parsed:
                parsed[(text, role)] = parse_label(text, role)
            items.extend((row, name, value) for name, value in parsed[(text, role)])
    convert = {
        "parcel_no": to_int,
        "sheet_no": to_int,
        "commune_code": to_commune_code,
        "declared_area_m2": to_area,
        "land_use_codes": lambda v: "+".join(to_land_use_codes(v)) or None,
    }
    for name, column in mapping.items():
        values = frame[column].to_numpy(dtype=object)[keep]
        for row, value in enumerate(values):
            converted = convert[name](value)
            if converted is not None and not (
                isinstance(converted, float) and math.isnan(converted)
            ):
                items.append((row, name, converted))
    return rows, items


def _collect_labels(
    frame: gpd.GeoDataFrame,
    labels: gpd.GeoDataFrame | None,
    *,
    driver: str,
    layers: LineworkLayers,
    explicit: bool,
) -> _Labels:
    cad = driver.upper() in ("DXF", "DGN")
    frames: list[pd.DataFrame] = []
    items: list[tuple[int, str, Any]] = []
    sources: list[tuple[gpd.GeoDataFrame, str, str | None, bool]] = [
        (frame, "drawing", driver, False)
    ]
    if labels is not None:
        sources.append((labels, "labels", None, True))
    for part, name, part_driver, attributes in sources:
        keys = _layer_column(part, part_driver)
        rows, found = _label_rows(
            part,
            source=name,
            keys=keys,
            layers=layers,
            filter_layers=keys is not None and ((cad and name == "drawing") or explicit),
            attributes=attributes,
        )
        offset = sum(len(f) for f in frames)
        items.extend((row + offset, field, value) for row, field, value in found)
        frames.append(rows)
    points = pd.concat(frames, ignore_index=True)
    table = pd.DataFrame(items, columns=["label", "field", "value"])
    table = table.sort_values("label", kind="stable", ignore_index=True)
    return _Labels(points, table)


def _comparable(field: str, value: Any) -> Any:
    """What two values of ``field`` are compared by: codes as a set, areas to 0.01 m²."""
    if field == "land_use_codes":
        return "+".join(sorted(set(str(value).split("+"))))
    if field == "declared_area_m2":
        return round(float(value), 2)
    return value


def _json(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return value


def _xy(point: shapely.Geometry) -> str:
    return f"({point.x:.2f}, {point.y:.2f})"


def read_linework(
    frame: gpd.GeoDataFrame,
    *,
    labels: gpd.GeoDataFrame | None = None,
    layers: LineworkLayers | None = None,
    driver: str,
    commune_code: str | None = None,
    sheet_no: int | None = None,
    snap_tolerance: float = 0.01,
) -> tuple[gpd.GeoDataFrame, list[Finding]]:
    """Polygons with canonical attribute columns, and the findings made.

    Parameters
    ----------
    frame
        The layer as read by pyogrio: a DXF ``entities`` layer (fields ``Layer``, ``Text``, ...),
        a DGN ``elements`` layer (``Level``, ``Text``, ...), or a layer of lines.
    labels
        Label points delivered in a layer of their own (a line Shapefile comes with a point
        Shapefile). A point carries a text in a field named ``Text``, ``Label``, ``Nhan`` or
        ``NoiDung`` (read like a drawing's texts) and/or attribute fields matched by
        ``schemas/field_mappings.yaml`` (``SoThuTuThua``, ``KyHieuMucDichSuDung``,
        ``DienTich``, and ``SoHieuToBanDo``/``MaXa`` when the arguments below are not given).
        Taken as in the CRS of ``frame`` when either has none, else reprojected to it.
    layers
        Which levels or layers are boundaries and labels; by default
        :meth:`LineworkLayers.default` of ``driver``. For a format other than DXF and DGN,
        every line is a boundary and every point a label, unless ``layers`` is given and the
        layer has a ``Layer`` or ``Level`` field to select by.
    driver
        OGR driver the frame was read with (``"DXF"``, ``"DGN"``, ``"ESRI Shapefile"``...).
    commune_code, sheet_no
        Key parts of the drawing, written into every row (a drawing is one map sheet).
    snap_tolerance
        Line ends this close (in CRS units, metres) to another line are joined to it, so
        that tiny drafting gaps close; overshoots this short are dropped.

    Returns
    -------
    parcels, findings
        One row per face formed by the boundary lines, ordered by the face's representative
        point from north to south, then west to east, with a ``RangeIndex``: ``commune_code``
        (str or None), ``sheet_no`` and ``parcel_no`` (``Int64``, ``<NA>`` when unknown),
        ``land_use_codes`` (str like ``"ODT+CLN"`` or None), ``declared_area_m2`` (float,
        NaN when unknown), ``label_texts`` (list of the raw texts inside, in file order; a
        label point that carries values in fields adds none) and
        ``geometry`` (Polygon, holes where another face lies inside), in the CRS of ``frame``.
        Findings carry ``source_row`` = the row of ``parcels`` they concern (None for labels
        outside every face and for loose lines); where two labels disagree the one read
        first (file order, drawing before ``labels``) is kept and ``detail`` says so.

    Raises
    ------
    LayerError
        No boundary line, or the boundary lines close no polygon.
    """
    if snap_tolerance < 0:
        raise ValueError(f"snap_tolerance must not be negative, got {snap_tolerance}")
    explicit = layers is not None
    layers = layers or LineworkLayers.default(driver)
    cad = driver.upper() in ("DXF", "DGN")
    keys = _layer_column(frame, driver)
    geometry = frame.geometry.values.to_numpy()
    boundary = ~np.isin(shapely.get_type_id(geometry), (-1, 0, 4))
    if keys is not None and (cad or explicit):
        boundary &= keys.isin(layers.boundary).to_numpy()
    lines = _exploded_lines(geometry[boundary])
    if len(lines) == 0:
        kind = "level" if driver.upper() == "DGN" else "layer"
        found = ", ".join(sorted(set(keys))[:20]) if keys is not None else "(none)"
        raise LayerError(
            f"no boundary lines on {kind}s {', '.join(sorted(layers.boundary)) or '(any)'}; "
            f"the drawing has {kind}s {found}"
        )
    faces = _faces(close_gaps(lines, snap_tolerance), snap_tolerance)
    if len(faces.polygons) == 0:
        raise LayerError(
            f"the {len(lines)} boundary lines close no polygon (gaps wider than "
            f"{snap_tolerance} m?)"
        )
    if labels is not None and frame.crs is not None and labels.crs is not None:
        labels = labels.to_crs(frame.crs)
    found_labels = _collect_labels(frame, labels, driver=driver, layers=layers, explicit=explicit)
    return _assemble(faces, found_labels, frame.crs, commune_code, sheet_no)


def _assemble(
    faces: _Faces,
    labels: _Labels,
    crs: Any,
    commune_code: str | None,
    sheet_no: int | None,
) -> tuple[gpd.GeoDataFrame, list[Finding]]:
    polygons = faces.polygons
    n = len(polygons)
    points, items = labels.points, labels.items
    face_of = np.full(len(points), -1)
    if len(points):
        label, face = shapely.STRtree(polygons).query(
            points["geometry"].to_numpy(), predicate="within"
        )
        face_of[label] = face
    items = items.assign(face=face_of[items["label"].to_numpy()])
    given = {"commune_code": commune_code, "sheet_no": sheet_no}
    items = items[~items["field"].isin([k for k, v in given.items() if v is not None])]
    inside = items[items["face"] >= 0].copy()
    inside["key"] = [
        _comparable(f, v) for f, v in zip(inside["field"], inside["value"], strict=True)
    ]
    first = inside.drop_duplicates(["face", "field"])
    values = first.pivot(index="face", columns="field", values="value")

    def column(name: str, default: Any = None) -> list[Any]:
        if name not in values:
            return [default] * n
        series = values[name].reindex(range(n))
        return [default if pd.isna(v) else v for v in series]

    has_text = (face_of >= 0) & points["text"].notna().to_numpy()
    text_face = face_of[has_text]
    order = np.argsort(text_face, kind="stable")
    bounds = np.searchsorted(text_face[order], np.arange(n + 1))
    texts = points["text"].to_numpy(dtype=object)[has_text][order]
    rows = {
        "commune_code": [commune_code] * n if commune_code else column("commune_code"),
        "sheet_no": pd.array(
            [sheet_no] * n if sheet_no is not None else column("sheet_no"), dtype="Int64"
        ),
        "parcel_no": pd.array(column("parcel_no"), dtype="Int64"),
        "land_use_codes": column("land_use_codes"),
        "declared_area_m2": np.array(column("declared_area_m2", np.nan), dtype="float64"),
        "label_texts": [texts[a:b].tolist() for a, b in itertools.pairwise(bounds)],
    }
    parcels = gpd.GeoDataFrame({name: rows[name] for name in COLUMNS}, geometry=polygons, crs=crs)

    findings: list[Finding] = []
    distinct = inside.drop_duplicates(["face", "field", "key"])
    counts = distinct.groupby(["face", "field"]).size()
    conflicts = counts[counts > 1].reset_index()
    conflicts["order"] = conflicts["field"].map(LABEL_FIELDS.index)
    conflicts = conflicts.sort_values(["face", "order"])
    unlabelled = np.flatnonzero(parcels["parcel_no"].isna().to_numpy())
    per_face: dict[int, list[Finding]] = {}
    for face in unlabelled:
        per_face.setdefault(int(face), []).append(_unlabelled(parcels, int(face)))
    for face, name in zip(conflicts["face"], conflicts["field"], strict=True):
        group = inside[(inside["face"] == face) & (inside["field"] == name)]
        per_face.setdefault(int(face), []).append(
            _conflict(parcels, int(face), name, group, points)
        )
    for face in sorted(per_face):
        findings.extend(per_face[face])
    outside = np.flatnonzero(face_of < 0)
    for label in outside:
        stated = items[items["label"] == label]
        findings.append(_outside(points.iloc[label], stated, commune_code, sheet_no))
    for line, reason, free_ends in faces.dangles:
        findings.append(_dangling(line, reason, free_ends, commune_code, sheet_no))
    return parcels, findings


def _keys(parcels: gpd.GeoDataFrame, row: int) -> dict[str, Any]:
    record = parcels.iloc[row]
    return {
        "commune_code": record["commune_code"],
        "sheet_no": None if pd.isna(record["sheet_no"]) else int(record["sheet_no"]),
        "parcel_no": None if pd.isna(record["parcel_no"]) else int(record["parcel_no"]),
    }


def _unlabelled(parcels: gpd.GeoDataFrame, row: int) -> Finding:
    polygon = parcels.geometry.iloc[row]
    where = polygon.point_on_surface()
    texts = parcels["label_texts"].iloc[row]
    return Finding(
        rule_code=UNLABELLED,
        message=(
            f"polygon {row} near {_xy(where)} ({polygon.area:.1f} m²) has no parcel-number "
            f"label{'' if not texts else '; its labels: ' + ', '.join(map(repr, texts))[:120]}"
        ),
        source_row=row,
        location=polygon,
        detail={
            "point": [round(where.x, 3), round(where.y, 3)],
            "label_texts": list(texts),
            "land_use_codes": parcels["land_use_codes"].iloc[row],
        },
        area_m2=round(float(polygon.area), 2),
        **_keys(parcels, row),
    )


def _label_detail(points: pd.DataFrame, label: int) -> dict[str, Any]:
    point = points.iloc[label]
    return {
        "text": point["text"],
        "source": point["source"],
        "feature": _json(point["feature"]),
        "layer": point["layer"],
        "point": [round(point["geometry"].x, 3), round(point["geometry"].y, 3)],
    }


def _conflict(
    parcels: gpd.GeoDataFrame, row: int, name: str, group: pd.DataFrame, points: pd.DataFrame
) -> Finding:
    kept = group.iloc[0]
    dropped = group[group["key"] != kept["key"]]
    dropped_values = list(dict.fromkeys(_json(v) for v in dropped["value"]))
    involved = [int(kept["label"]), *(int(v) for v in dropped["label"])]
    what = {"parcel_no": "parcel numbers", "land_use_codes": "land-use labels"}.get(
        name, "area labels" if name == "declared_area_m2" else f"{name} values"
    )
    keys = _keys(parcels, row)
    other = dropped_values[0] if name == "parcel_no" else None
    return Finding(
        rule_code=LABEL_CONFLICT,
        message=(
            f"polygon {row} (parcel {keys['parcel_no'] if keys['parcel_no'] is not None else '?'}"
            f") has {what} that disagree: kept {_json(kept['value'])!r} (read first), "
            f"dropped {', '.join(map(repr, dropped_values))}"
        ),
        source_row=row,
        location=shapely.multipoints([points["geometry"].iloc[i] for i in dict.fromkeys(involved)]),
        detail={
            "field": name,
            "kept": _json(kept["value"]),
            "dropped": dropped_values,
            "rule": "the label read first (file order; drawing before the label layer) is kept",
            "kept_label": _label_detail(points, int(kept["label"])),
            "dropped_labels": [_label_detail(points, int(i)) for i in dropped["label"]],
        },
        other_commune_code=keys["commune_code"] if other is not None else None,
        other_sheet_no=keys["sheet_no"] if other is not None else None,
        other_parcel_no=other,
        **keys,
    )


def _outside(
    point: pd.Series, stated: pd.DataFrame, commune_code: str | None, sheet_no: int | None
) -> Finding:
    values = {
        name: _json(value) for name, value in zip(stated["field"], stated["value"], strict=True)
    }
    shown = point["text"] if point["text"] is not None else values
    parcel_no = values.get("parcel_no")
    return Finding(
        rule_code=LABEL_OUTSIDE,
        message=f"label {shown!r} at {_xy(point['geometry'])} lies in no parcel polygon",
        location=point["geometry"],
        detail={
            "text": point["text"],
            "values": values,
            "source": point["source"],
            "feature": _json(point["feature"]),
            "layer": point["layer"],
        },
        commune_code=commune_code or values.get("commune_code"),
        sheet_no=sheet_no if sheet_no is not None else values.get("sheet_no"),
        parcel_no=parcel_no,
    )


def _dangling(
    line: shapely.LineString,
    reason: str,
    free_ends: list[list[float]],
    commune_code: str | None,
    sheet_no: int | None,
) -> Finding:
    at = free_ends[0] if free_ends else list(line.coords[0])
    how = {
        "dangle": "has a free end",
        "cut_edge": "joins faces without bounding one",
        "invalid_ring": "forms an invalid ring",
    }[reason]
    return Finding(
        rule_code=DANGLING,
        message=(
            f"boundary line of {line.length:.2f} m near ({at[0]:.2f}, {at[1]:.2f}) {how} "
            f"and is no parcel edge"
        ),
        location=line,
        detail={"reason": reason, "length_m": round(line.length, 3), "free_ends": free_ends},
        commune_code=commune_code,
        sheet_no=sheet_no,
    )


def read_linework_file(
    path: str | Path,
    *,
    labels_path: str | Path | None = None,
    layer: str | None = None,
    **options: Any,
) -> tuple[gpd.GeoDataFrame, list[Finding]]:
    """Read a drawing or a line layer (and a label layer) from disk and run
    :func:`read_linework` on it; ``options`` are passed through."""
    path = Path(path)
    info = pyogrio.read_info(path, layer=layer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        frame = pyogrio.read_dataframe(path, layer=layer)
        labels = pyogrio.read_dataframe(labels_path) if labels_path is not None else None
    return read_linework(frame, labels=labels, driver=str(info["driver"]), **options)


__all__ = [
    "DANGLING",
    "LABEL_CONFLICT",
    "LABEL_OUTSIDE",
    "UNLABELLED",
    "LineworkLayers",
    "close_gaps",
    "is_linework",
    "parse_label",
    "read_linework",
    "read_linework_file",
]
