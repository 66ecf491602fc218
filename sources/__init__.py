"""Read survey deliveries into canonical parcels. No Prefect and no database here.

The steps, each a plain function the flow runs as a task:
:func:`open_source` -> :func:`read_parcel_layer` (layer, text encoding, linework)
-> :func:`map_fields` -> :func:`decide_crs` -> :func:`to_storage`.
:func:`read_delivery` runs them all.
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyproj
import yaml

from landpipe.errors import FieldError
from landpipe.memory import collector_paused
from landpipe.schemas.findings import Finding
from landpipe.schemas.parcel import ATTRIBUTES
from landpipe.sources.crs import CRSDecision, decide_crs, storage_crs, to_storage
from landpipe.sources.fields import map_fields, unreadable_findings
from landpipe.sources.files import READ_ENCODING, Source, fingerprint, open_source
from landpipe.sources.layers import RawLayer, read_parcel_layer
from landpipe.sources.records import RecordDigests, reading_context, record_hashes
from landpipe.sources.text import TextDecision

__all__ = [
    "CRSDecision",
    "Delivery",
    "RawLayer",
    "Source",
    "TextDecision",
    "decide_crs",
    "load_mapping",
    "map_fields",
    "open_source",
    "read_delivery",
    "read_parcel_layer",
    "to_storage",
]


@dataclass
class Delivery:
    """A delivery read and mapped onto canonical parcels in the storage CRS.

    Attributes
    ----------
    source, layer
        Where it came from.
    field_mapping, mapping_how
        Canonical field -> delivered field name, and ``detected`` or ``option`` (``--mapping``).
    crs
        The CRS the delivery was read in, and how landpipe knows it.
    parcels
        Canonical parcels (``source_row``, attributes, geometry in EPSG:9218).
    attributes
        Every delivered field as read (text decoded), one row per record, by ``source_row``.
    text
        The text encoding used, and how it was decided.
    findings
        Findings made while reading (text encoding, linework labels).
    linework
        Whether the parcels were built from boundary lines and label texts.
    records
        The delivered records as read (one row per row of ``parcels``), for their hashes;
        None for parcels built from linework.
    digests
        The records' digests, under way since they were read (None: made when needed).
    fills
        The options that filled what records lack: ``commune``, ``sheet``, ``scale``.
    """

    source: Source
    layer: str
    field_mapping: dict[str, str]
    crs: CRSDecision
    parcels: gpd.GeoDataFrame
    attributes: pd.DataFrame
    text: TextDecision
    findings: list[Finding] = field(default_factory=list)
    mapping_how: str = "detected"
    linework: bool = False
    records: pa.Table | None = None
    digests: RecordDigests | None = None
    fills: dict[str, object] = field(default_factory=dict)
    #: What the register's steps work out of the parcels once and use again (keys, covered
    #: sheets, content hashes).
    cache: dict[str, object] = field(default_factory=dict, repr=False)

    @classmethod
    def assemble(
        cls,
        source: Source,
        raw: RawLayer,
        field_mapping: dict[str, str],
        crs: CRSDecision,
        parcels: gpd.GeoDataFrame,
        *,
        mapping_how: str = "detected",
        fills: dict[str, object] | None = None,
    ) -> Delivery:
        """A delivery from the results of the reading steps; ``fills``: the options that
        filled what records lack (``commune``, ``sheet``, ``scale``)."""
        return cls(
            source=source,
            layer=raw.layer,
            field_mapping=field_mapping,
            crs=crs,
            parcels=parcels,
            attributes=pd.DataFrame(raw.frame.drop(columns=raw.frame.geometry.name)),
            text=raw.text,
            findings=[*raw.findings, *unreadable_findings(raw.frame, parcels, field_mapping)],
            mapping_how=mapping_how,
            linework=raw.linework,
            records=raw.records,
            digests=raw.digests,
            fills={k: v for k, v in (fills or {}).items() if v is not None},
        )

    @functools.cached_property
    def commune_code(self) -> str | None:
        """The commune most parcels belong to."""
        # The most frequent, the lowest of those as frequent (as Series.mode has it).
        codes, communes = pd.factorize(self.parcels["commune_code"], sort=True)
        counts = np.bincount(codes[codes >= 0], minlength=len(communes))
        return str(communes[int(np.argmax(counts))]) if counts.any() else None

    @functools.cached_property
    def record_hashes(self) -> np.ndarray | None:
        """The hash of each delivered record under this reading's context, one 16-byte row
        per row of ``parcels`` (:mod:`landpipe.sources.records`); None for parcels built
        from linework."""
        if self.records is None or self.records.num_rows != len(self.parcels):
            return None
        return record_hashes(self.records, self.reading_context, self.digests)

    @property
    def reading_context(self) -> bytes:
        """What, beside a record, decides the parcel landpipe makes of it (the key of
        :attr:`record_hashes`): how GDAL read the record and its text was decoded, the field
        mapping, the CRS and its transformation to storage, the options filling what records
        lack. (Validation does not change an accepted parcel except by repairing its geometry,
        and a repaired parcel keeps no record hash: see :func:`landpipe.register.merge`.)"""
        schema = self.records.schema if self.records is not None else pa.schema([])
        return reading_context(
            {
                "driver": self.source.driver,
                "fields": [[f.name, str(f.type)] for f in schema],
                "read_encoding": (schema.metadata or {}).get(READ_ENCODING, b"").decode(),
                "text": self.text.encoding,
                "mapping": self.field_mapping,
                "crs": self.crs.crs.to_wkt(),
                "storage": storage_crs().to_wkt(),
                "proj": pyproj.proj_version_str,
                "fills": self.fills,
            }
        )

    @property
    def extra_fields(self) -> list[str]:
        """Delivered fields not stored in a canonical column (kept as ``attributes``)."""
        mapped = {name for canonical, name in self.field_mapping.items() if canonical in ATTRIBUTES}
        return [name for name in self.attributes.columns if name not in mapped]


def load_mapping(path: str | Path) -> dict[str, str]:
    """A field mapping file (YAML: ``canonical_field: DeliveredField``) given with --mapping."""
    path = Path(path)
    try:
        mapping = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        reason = " ".join(str(err).split())  # a YAML parser's message spans lines
        raise FieldError(f"--mapping {path}: cannot be read ({reason})") from err
    if isinstance(mapping, dict) and isinstance(mapping.get("fields"), dict):
        mapping = mapping["fields"]
    if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
        raise FieldError(f"--mapping {path}: expected 'canonical_field: DeliveredField' lines")
    return {str(k): v for k, v in mapping.items()}


@collector_paused()
def read_delivery(
    path: str | Path,
    *,
    commune_code: str | None = None,
    sheet_no: int | None = None,
    crs: str | None = None,
    layer: str | None = None,
    encoding: str | None = None,
    mapping: dict[str, str] | None = None,
    map_scale: int | None = None,
) -> Delivery:
    """Read a delivery at ``path`` into canonical parcels in EPSG:9218.

    Raises
    ------
    landpipe.errors.DeliveryError
        The delivery cannot be used as a whole (see its subclasses).
    """
    path = Path(path)
    with ThreadPoolExecutor(max_workers=1) as pool:
        # hashlib and GDAL's read both let go of the GIL: fingerprint the files meanwhile.
        digest = pool.submit(fingerprint, path)
        source = open_source(path, fingerprinted=False)
        try:
            raw = read_parcel_layer(
                source, layer=layer, encoding=encoding, commune_code=commune_code, sheet_no=sheet_no
            )
        finally:  # files that cannot be hashed fail first, as they do in open_source
            source = replace(source, sha256=digest.result())
    parcels, used = map_fields(
        raw.frame,
        commune_code=commune_code,
        sheet_no=sheet_no,
        mapping=mapping,
        map_scale=map_scale,
        text_nfc=True,
    )
    decision = decide_crs(parcels, declared=crs, source_name=str(source.path))
    return Delivery.assemble(
        source,
        raw,
        used,
        decision,
        to_storage(parcels, decision),
        mapping_how="option" if mapping else "detected",
        fills={"commune": commune_code, "sheet": sheet_no, "scale": map_scale},
    )
