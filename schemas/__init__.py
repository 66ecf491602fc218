"""landpipe's contracts, kept as data: the canonical parcel, code lists, CRS table, rule catalogue.

Each loader reads a file shipped beside this module once and caches it; correct the files, not
the code, when a fact is wrong.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files
from typing import Any

import yaml

SEVERITIES = ("reject", "block", "warn")


def _text(name: str) -> str:
    return files(__name__).joinpath(name).read_text(encoding="utf-8")


@dataclass(frozen=True)
class Rule:
    """One rule of the catalogue: a stable code, its severity, what it means and its parameters."""

    code: str
    severity: str
    en: str
    vi: str
    params: dict[str, Any] = field(default_factory=dict)


@cache
def rules() -> dict[str, Rule]:
    """The rule catalogue (``rules.yaml``), by code."""
    catalogue = yaml.safe_load(_text("rules.yaml"))["rules"]
    loaded = {entry["code"]: Rule(**entry) for entry in catalogue}
    for rule in loaded.values():
        if rule.severity not in SEVERITIES:
            raise ValueError(f"rules.yaml: {rule.code} has unknown severity {rule.severity!r}")
    return loaded


@cache
def land_use_codes() -> dict[str, dict[str, str]]:
    """Land-use codes (``land_use_codes.csv``) by code, each row as read."""
    return {row["code"]: row for row in csv.DictReader(_text("land_use_codes.csv").splitlines())}


@cache
def admin_units() -> dict[str, dict[str, str]]:
    """Administrative units of Bình Thuận (``admin_units.csv``) by code."""
    return {row["code"]: row for row in csv.DictReader(_text("admin_units.csv").splitlines())}


def commune_codes() -> frozenset[str]:
    """The 5-digit codes of the province's communes."""
    return frozenset(code for code, row in admin_units().items() if row["level"] == "commune")


@cache
def district_boundaries() -> dict[str, Any]:
    """District boundaries as a GeoJSON FeatureCollection (WGS 84)."""
    return json.loads(_text("districts.geojson"))


@cache
def field_aliases() -> dict[str, list[str]]:
    """Canonical parcel field -> known export field names, in order of preference."""
    return yaml.safe_load(_text("field_mappings.yaml"))["fields"]


@cache
def crs_table() -> dict[str, Any]:
    """The storage EPSG code and the VN-2000 candidates tried when a delivery has no CRS."""
    return yaml.safe_load(_text("crs.yaml"))
