"""Decide a delivery's CRS, check it against where the data lies, and reproject to storage.

The declared CRS (the file's, or ``--crs``) is trusted only when it places the parcels inside
Bình Thuận. With none declared, a VN-2000 system is inferred only when exactly one of the
candidates in ``schemas/crs.yaml`` places them inside the expected district (or the province).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import geopandas as gpd
import numpy as np
import shapely
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError as ProjCRSError

from landpipe import schemas
from landpipe.errors import CRSError, LayerError
from landpipe.schemas import parcel

#: Share of a delivery's parcels that must fall inside the area for a CRS to fit it.
FIT_SHARE = 0.9
#: Representative points tested per delivery (a sample keeps big deliveries cheap).
SAMPLE_SIZE = 2000
#: Buffer around district and province boundaries, which are administrative-map quality.
BOUNDARY_BUFFER_M = 200.0


@dataclass(frozen=True)
class CRSDecision:
    """The CRS a delivery is read in, how landpipe knows it (file, option or inferred), and
    a note when a declared CRS was recognised as a VN-2000 system it does not name."""

    crs: CRS
    how: str
    note: str | None = None

    @property
    def label(self) -> str:
        epsg = self.crs.to_epsg()
        return f"EPSG:{epsg}" if epsg else self.crs.name


def parse_crs(text: str) -> CRS:
    """A CRS given by a user (``9218``, ``EPSG:9218``, a PROJ string or WKT)."""
    try:
        return CRS.from_user_input(int(text) if text.strip().isdigit() else text)
    except ProjCRSError as err:
        raise CRSError(f"--crs {text!r} is not a coordinate reference system") from err


def describe(crs: CRS) -> str:
    epsg = crs.to_epsg()
    return f"{crs.name} (EPSG:{epsg})" if epsg else crs.name


@cache
def storage_crs() -> CRS:
    return CRS.from_epsg(schemas.crs_table()["storage"])


@cache
def boundary(code: str | None, buffer_m: float = BOUNDARY_BUFFER_M) -> shapely.Geometry:
    """The boundary of district ``code`` (or of the province), buffered, in the storage CRS."""
    districts = gpd.GeoDataFrame.from_features(schemas.district_boundaries()["features"], crs=4326)
    if code is not None:
        districts = districts[districts["code"] == code]
    area = districts.to_crs(storage_crs()).union_all().buffer(buffer_m)
    shapely.prepare(area)
    return area


def district_of(commune_code: str | None) -> str | None:
    unit = schemas.admin_units().get(commune_code or "")
    return unit["parent_code"] if unit and unit["level"] == "commune" else None


def _sample_points(parcels: gpd.GeoDataFrame) -> np.ndarray:
    geometries = parcels.geometry.values
    present = geometries[~(shapely.is_missing(geometries) | shapely.is_empty(geometries))]
    if len(present) > SAMPLE_SIZE:
        present = present[np.linspace(0, len(present) - 1, SAMPLE_SIZE).astype(int)]
    # A NaN or infinite coordinate places nothing (and GEOS's make_valid raises on it): such
    # a record is left to validation, which rejects it.
    present = present[finite_coordinates(present)]
    with np.errstate(over="ignore", invalid="ignore"):  # coordinates of 1e300 place nothing
        return shapely.get_coordinates(shapely.point_on_surface(shapely.make_valid(present)))


def finite_coordinates(geometry: np.ndarray) -> np.ndarray:
    """Whether each geometry's x and y are finite numbers (not NaN nor infinite) throughout:
    GEOS compares NaN as equal to anything, and cannot repair it."""
    xy, at = shapely.get_coordinates(geometry, return_index=True)  # x and y: z is dropped
    finite = np.ones(len(geometry), dtype=bool)
    with np.errstate(invalid="ignore"):
        finite[at[~np.isfinite(xy).all(axis=1)]] = False
    return finite


def share_inside(points: np.ndarray, crs: CRS, area: shapely.Geometry) -> float:
    """Share of ``points`` (x, y in ``crs``) that fall inside ``area`` (storage CRS)."""
    if len(points) == 0:
        return 0.0
    transformer = Transformer.from_crs(crs, storage_crs(), always_xy=True)
    x, y = transformer.transform(points[:, 0], points[:, 1], errcheck=False)
    finite = np.isfinite(x) & np.isfinite(y)
    inside = np.zeros(len(points), dtype=bool)
    inside[finite] = shapely.contains_xy(area, x[finite], y[finite])
    return float(inside.mean())


#: Rotations (arc-seconds) of the official VN-2000 -> WGS 84 transformation (EPSG:6960) in the
#: position-vector convention of +towgs84/TOWGS84. The published (coordinate-frame) values
#: have the opposite signs; copying them into TOWGS84 is a known error of about 0.5 m.
_VN2000_ROTATIONS_PV = (0.00928836, -0.01975479, 0.00427372)
_TM_PARAMETERS = {
    "Longitude of natural origin": "lon_0",
    "Scale factor at natural origin": "k",
    "False easting": "x_0",
    "False northing": "y_0",
    "Latitude of natural origin": "lat_0",
}


def _tm_parameters(crs: CRS) -> dict[str, float] | None:
    operation = crs.coordinate_operation
    if operation is None or "transverse mercator" not in operation.method_name.lower():
        return None
    return {
        _TM_PARAMETERS[p.name]: round(p.value, 9)
        for p in operation.params
        if p.name in _TM_PARAMETERS
    }


def _towgs84_note(crs: CRS) -> str | None:
    """Say whether a bound CRS's TOWGS84 rotations carry the known sign error."""
    if not crs.is_bound or crs.coordinate_operation is None:
        return None
    rotations = [p.value for p in crs.coordinate_operation.params if "rotation" in p.name.lower()]
    if len(rotations) != 3:
        return None
    position_vector = "position vector" in crs.coordinate_operation.method_name.lower()
    signed = tuple(r if position_vector else -r for r in rotations)
    if all(abs(a + b) < 1e-7 for a, b in zip(signed, _VN2000_ROTATIONS_PV, strict=True)):
        return "its TOWGS84 carries the published rotation signs (the known ~0.5 m sign error)"
    return None


def recognise(crs: CRS) -> tuple[CRS, str | None]:
    """Map a declared CRS onto the VN-2000 system it describes, when it names none.

    ESRI-style ``.prj`` files name VN-2000 systems their own way and may bind a TOWGS84 with
    the sign error; the projection parameters still say which TM-3/UTM zone is meant. The
    EPSG system (which carries the official transformation) replaces it, and a note says so.
    """
    base = crs.source_crs if crs.is_bound and crs.source_crs is not None else crs
    candidates = {c.to_epsg(): c for c in _candidates()}
    epsg = base.to_epsg(min_confidence=70)
    note = _towgs84_note(crs)
    if epsg in candidates and (note or crs.is_bound or base.to_epsg() is None):
        return candidates[epsg], f"recognised as EPSG:{epsg}" + (f"; {note}" if note else "")
    if epsg is not None:
        return crs, note
    parameters = _tm_parameters(base)
    ellipsoid = base.ellipsoid
    if parameters is None or ellipsoid is None or abs(ellipsoid.semi_major_metre - 6378137) > 1:
        return crs, note
    for code, candidate in candidates.items():
        if _tm_parameters(candidate) == parameters:
            text = f"recognised as EPSG:{code} from its projection parameters"
            return candidate, text + (f"; {note}" if note else "")
    return crs, note


def _candidates() -> list[CRS]:
    return [CRS.from_epsg(entry["epsg"]) for entry in schemas.crs_table()["candidates"]]


def fitting_candidates(points: np.ndarray, area: shapely.Geometry) -> list[CRS]:
    """The VN-2000 candidates that place ``points`` inside ``area``."""
    return [crs for crs in _candidates() if share_inside(points, crs, area) >= FIT_SHARE]


def decide_crs(
    parcels: gpd.GeoDataFrame, *, declared: str | None = None, source_name: str = "delivery"
) -> CRSDecision:
    """Decide the CRS of ``parcels`` and check that it places them in Bình Thuận.

    Parameters
    ----------
    parcels
        The mapped delivery; its ``.crs`` is the one the file declares (or None).
    declared
        ``--crs`` from the user; it overrides the file's.

    Raises
    ------
    CRSError
        No CRS and none can be inferred, or the CRS places the data outside the province.
    """
    points = _sample_points(parcels)
    if len(points) == 0:
        raise LayerError(f"{source_name}: no record has a geometry")
    communes = parcels[parcel.KEY[0]].mode()  # the most frequent code(s), blanks aside
    commune = communes.iloc[0] if len(communes) else None
    district = district_of(commune)
    province = boundary(None)
    if declared is not None:
        decision = CRSDecision(parse_crs(declared), "option")
    elif parcels.crs is not None:
        declared_crs, note = recognise(CRS.from_user_input(parcels.crs))
        decision = CRSDecision(declared_crs, "file", note)
    else:
        area = boundary(district) if district else province
        fits = fitting_candidates(points, area)
        if len(fits) == 1:
            return CRSDecision(fits[0], "inferred")
        if not fits:
            raise CRSError(
                f"{source_name}: no CRS declared and no VN-2000 system places its coordinates "
                "in Bình Thuận; give --crs"
            )
        names = ", ".join(describe(crs) for crs in fits)
        raise CRSError(f"{source_name}: no CRS declared and several fit ({names}); give --crs")
    if share_inside(points, decision.crs, province) < FIT_SHARE:
        fits = [crs for crs in fitting_candidates(points, province) if crs != decision.crs]
        hint = (
            f"coordinates fit {describe(fits[0])}, not {describe(decision.crs)}"
            if fits
            else f"coordinates lie outside Bình Thuận under {describe(decision.crs)} "
            "and under every VN-2000 system"
        )
        raise CRSError(f"{source_name}: {hint}")
    return decision


def to_storage(parcels: gpd.GeoDataFrame, decision: CRSDecision) -> gpd.GeoDataFrame:
    """Reproject ``parcels`` from the decided CRS to the storage CRS (EPSG:9218).

    The register is planar: heights that a drawing or a 3D layer carries are dropped (the
    register's geometry column is 2D, and a parcel's area and boundary are the plane's).
    """
    framed = parcels.set_crs(decision.crs, allow_override=True)
    if decision.crs.equals(storage_crs()):
        stored = framed.set_crs(storage_crs(), allow_override=True)
    else:
        stored = framed.to_crs(storage_crs())
    geometry = np.asarray(stored.geometry.values, dtype=object)
    if shapely.has_z(geometry).any():
        stored = stored.set_geometry(
            gpd.GeoSeries(shapely.force_2d(geometry), index=stored.index, crs=storage_crs()),
            inplace=False,
        )
    return stored
