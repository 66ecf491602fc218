"""The ``load_delivery`` flow: read -> map fields -> reproject -> validate -> load -> summary."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import geopandas as gpd
import psycopg
import sqlalchemy as sa
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, Failed, State

from landpipe import sources
from landpipe.config import Settings
from landpipe.db import make_engine
from landpipe.errors import DatabaseError, DeliveryError
from landpipe.load import LoadResult, load, record_refusal
from landpipe.migrate import ensure_current
from landpipe.sources import Delivery
from landpipe.sources.files import DRIVERS, fingerprint
from landpipe.validate import Validation, validate


def _refusable(step: Callable[..., Any]) -> Callable[..., Any]:
    """Return a delivery's refusal as the step's value, not as a task failure.

    A refused delivery is an expected outcome, not a crash: the flow ends Failed with the
    refusal's one-line message, and no traceback is logged for the user's input.
    """

    @functools.wraps(step)
    def body(*args: Any, **kwargs: Any) -> Any:
        try:
            return step(*args, **kwargs)
        except DeliveryError as error:
            return error

    return body


def _unwrap(value: Any) -> Any:
    if isinstance(value, DeliveryError):
        raise value
    return value


@task(name="read", cache_policy=NO_CACHE)
@_refusable
def read_step(
    path: str, layer: str | None, encoding: str | None, commune: str | None, sheet: int | None
) -> tuple[sources.Source, sources.RawLayer]:
    source = sources.open_source(path)
    raw = sources.read_parcel_layer(
        source, layer=layer, encoding=encoding, commune_code=commune, sheet_no=sheet
    )
    return source, raw


@task(name="map fields", cache_policy=NO_CACHE)
@_refusable
def map_step(
    raw: sources.RawLayer,
    commune: str | None,
    sheet: int | None,
    mapping: str | None,
    scale: int | None,
):
    fields = sources.load_mapping(mapping) if mapping else None
    return sources.map_fields(
        raw.frame, commune_code=commune, sheet_no=sheet, mapping=fields, map_scale=scale
    )


@task(name="reproject", cache_policy=NO_CACHE)
@_refusable
def reproject_step(parcels: gpd.GeoDataFrame, crs: str | None, source_name: str):
    decision = sources.decide_crs(parcels, declared=crs, source_name=source_name)
    return decision, sources.to_storage(parcels, decision)


@task(name="validate", cache_policy=NO_CACHE)
def validate_step(delivery: Delivery) -> Validation:
    return validate(delivery.parcels, delivery.findings)


def _connection_lost(task, task_run, state) -> bool:
    """Retry a step only when the database connection was lost, never for bad data."""
    error = state.result(raise_on_failure=False)
    return isinstance(error, (DatabaseError, sa.exc.OperationalError, psycopg.OperationalError))


@task(
    name="load",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=_connection_lost,
)
def load_step(settings: Settings, delivery: Delivery, validation: Validation, started_at: datetime):
    engine = make_engine(settings)
    try:
        ensure_current(engine, upgrade_if_needed=settings.database_url is None)
        return load(engine, delivery, validation, started_at=started_at)
    finally:
        engine.dispose()


def _refuse(settings: Settings, path: str, error: DeliveryError, started_at: datetime, options):
    """Record a refused delivery as a failed batch, when there is content to fingerprint."""
    delivered = Path(path)
    if not delivered.exists():
        return None
    engine = make_engine(settings)
    try:
        ensure_current(engine, upgrade_if_needed=settings.database_url is None)
        return record_refusal(
            engine,
            source_path=str(delivered.resolve()),
            sha256=fingerprint(delivered),
            driver=DRIVERS.get(delivered.suffix.lower()),
            error=str(error),
            started_at=started_at,
            options=options,
        )
    finally:
        engine.dispose()


@flow(name="load_delivery", log_prints=True)
def load_delivery(
    path: str,
    commune: str | None = None,
    sheet: int | None = None,
    crs: str | None = None,
    layer: str | None = None,
    encoding: str | None = None,
    mapping: str | None = None,
    scale: int | None = None,
) -> State:
    """Load one survey delivery into the land register.

    Returns a Completed state holding the load summary (``LoadResult.as_json()``), or a
    Failed state holding it when the delivery cannot be used as a whole.
    """
    logger = get_run_logger()
    settings = Settings()
    started_at = datetime.now(UTC)
    options: dict[str, Any] = {
        "commune": commune,
        "sheet": sheet,
        "crs": crs,
        "layer": layer,
        "encoding": encoding,
        "mapping": mapping,
        "scale": scale,
    }
    try:
        source, raw = _unwrap(read_step(path, layer, encoding, commune, sheet))
        logger.info(
            "read %d records from %s (layer %s), text %s (%s, confidence %.2f)",
            len(raw.frame),
            source.path,
            raw.layer,
            raw.text.encoding,
            raw.text.how,
            raw.text.confidence,
        )
        parcels, used = _unwrap(map_step(raw, commune, sheet, mapping, scale))
        logger.info("field mapping (%s): %s", "option" if mapping else "detected", used)
        decision, parcels = _unwrap(reproject_step(parcels, crs, str(source.path)))
        logger.info("CRS %s (%s), reprojected to EPSG:9218", decision.label, decision.how)
        delivery = Delivery.assemble(
            source, raw, used, decision, parcels, mapping_how="option" if mapping else "detected"
        )
        validation = validate_step(delivery)
    except DeliveryError as error:
        logger.info("delivery refused: %s", error)
        batch = _refuse(settings, path, error, started_at, options)
        summary = LoadResult(
            batch=batch,
            status="rejected",
            source=path,
            error=str(error),
            error_kind=type(error).__name__,
        )
        return Failed(message=str(error), data=summary.as_json())
    result: LoadResult = load_step(settings, delivery, validation, started_at)
    logger.info(
        "batch %s %s: %d read, %d loaded, %d repaired, %d rejected",
        result.batch,
        result.status,
        result.read,
        result.loaded,
        result.repaired,
        result.rejected,
    )
    return Completed(message=f"batch {result.batch} {result.status}", data=result.as_json())
