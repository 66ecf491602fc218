"""A finding: one rule of the catalogue broken by one delivered record (or a pair of them).

The contract shared by ``sources/`` (findings made while reading, e.g. ``ATTR_ENCODING`` or a
label outside every polygon), validation and the loader, which stores them in ``land.finding``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import shapely

from landpipe import schemas


@dataclass
class Finding:
    """One finding, with where and why.

    Attributes
    ----------
    rule_code
        A code of ``schemas/rules.yaml``.
    message
        One line in English naming the record and what is wrong.
    source_row
        0-based row of the record in the delivered layer; None when the finding concerns no
        record (a label outside every polygon, a dangling boundary line).
    location
        A point or area in the storage CRS (EPSG:9218) that a technician can open in QGIS.
    detail
        JSON-able facts behind the message (reason, codes, tolerance, ...).
    commune_code, sheet_no, parcel_no
        Key of the parcel concerned, as far as it is known.
    other_commune_code, other_sheet_no, other_parcel_no
        Key of the second parcel when two are involved (an overlap, a gap).
    area_m2
        Area concerned (of an overlap, a gap, a sliver), when there is one.
    """

    rule_code: str
    message: str
    source_row: int | None = None
    location: shapely.Geometry | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    commune_code: str | None = None
    sheet_no: int | None = None
    parcel_no: int | None = None
    other_commune_code: str | None = None
    other_sheet_no: int | None = None
    other_parcel_no: int | None = None
    area_m2: float | None = None

    @property
    def severity(self) -> str:
        """The rule's severity in the catalogue: ``reject``, ``block`` or ``warn``."""
        return schemas.rules()[self.rule_code].severity
