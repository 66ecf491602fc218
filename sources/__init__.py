"""Read survey deliveries into canonical parcels. No Prefect and no database here.

The steps, each a plain function the flow runs as a task:
:func:`open_source` -> :func:`choose_layer` / :func:`read_layer` -> :func:`map_fields`
-> :func:`decide_crs` -> :func:`to_storage`. :func:`read_delivery` runs them all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd

from landpipe.sources.crs import CRSDecision, decide_crs, to_storage
from landpipe.sources.fields import map_fields
from landpipe.sources.files import Source, choose_layer, open_source, read_layer

__all__ = [
    "CRSDecision",
    "Delivery",
    "Source",
    "choose_layer",
    "decide_crs",
    "map_fields",
    "open_source",
    "read_delivery",
    "read_layer",
    "to_storage",
]


@dataclass
class Delivery:
    """A delivery read and mapped onto canonical parcels in the storage CRS."""

    source: Source
    layer: str
    field_mapping: dict[str, str]
    crs: CRSDecision
    parcels: gpd.GeoDataFrame

    @property
    def commune_code(self) -> str | None:
        """The commune most parcels belong to."""
        codes = self.parcels["commune_code"].dropna()
        return str(codes.mode().iloc[0]) if len(codes) else None


def read_delivery(
    path: str | Path,
    *,
    commune_code: str | None = None,
    crs: str | None = None,
    layer: str | None = None,
) -> Delivery:
    """Read a delivery at ``path`` into canonical parcels in EPSG:9218.

    Raises
    ------
    landpipe.errors.DeliveryError
        The delivery cannot be used as a whole (see its subclasses).
    """
    source = open_source(path)
    layer_name = choose_layer(source, layer)
    delivered = read_layer(source, layer_name)
    parcels, mapping = map_fields(delivered, commune_code=commune_code)
    decision = decide_crs(parcels, declared=crs, source_name=str(source.path))
    return Delivery(source, layer_name, mapping, decision, to_storage(parcels, decision))
