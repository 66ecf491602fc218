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

#: Columns a delivery frame carries besides the attributes: the row number in the source
#: (0-based, the record's identity within the delivery), the delivered fields that map onto
#: nothing (``extra``), and every delivered field as read (``delivered``, kept for rejects).
SOURCE_ROW = "source_row"
EXTRA = "extra"
DELIVERED = "delivered"

#: The CRS parcels are stored in: VN-2000 / TM-3 108-30.
STORAGE_EPSG = 9218
