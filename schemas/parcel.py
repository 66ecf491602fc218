"""The canonical parcel: the columns every source maps a delivery onto."""

from __future__ import annotations

#: Key of a parcel: commune code (5 digits), map sheet number, parcel number on the sheet.
KEY = ("commune_code", "sheet_no", "parcel_no")

#: Canonical attribute columns, in the order of ``land.parcel``.
ATTRIBUTES = (
    "commune_code",
    "sheet_no",
    "parcel_no",
    "land_use_codes",
    "declared_area_m2",
    "legal_area_m2",
    "owner_name",
    "address",
)

#: Column of the record's row in the delivered layer (0-based): its identity within the
#: delivery, linking a parcel to its delivered attributes (``Delivery.attributes``).
SOURCE_ROW = "source_row"

#: The CRS parcels are stored in: VN-2000 / TM-3 108-30.
STORAGE_EPSG = 9218
