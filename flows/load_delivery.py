"""The ``load_delivery`` flow: read -> map fields -> reproject -> validate -> load -> report.

Run names say which delivery and which step (flow run ``load thua_dat_22924.shp``, task runs
``read thua_dat_22924.shp``, ...). Steps that write to the database retry with exponential
back-off when the connection was lost, never for bad data (:data:`ON_CONNECTION_LOSS`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import psycopg
import sqlalchemy as sa
from prefect import flow, get_run_logger, runtime, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, Failed, State
from prefect.tasks import exponential_backoff

from landpipe import progress, register, sources
from landpipe.config import Settings
from landpipe.db import make_engine
from landpipe.errors import DatabaseError, DeliveryError
from landpipe.inbox import report_folder, write_report_or_fallback
from landpipe.load import LoadResult, load, look_at_register, record_refusal
from landpipe.memory import collector_paused
from landpipe.migrate import ensure_current
from landpipe.sources import Delivery
from landpipe.sources.files import DRIVERS, fingerprint
from landpipe.validate import Validation, validate


def database_unreachable(error: object) -> bool:
    """Whether ``error`` says the database could not be reached (or the connection broke)."""
    return isinstance(error, (DatabaseError, sa.exc.OperationalError, psycopg.OperationalError))


def connection_lost(task, task_run, state) -> bool:
    """Retry a step only when the database connection was lost, never for bad data."""
    return database_unreachable(state.result(raise_on_failure=False))


#: Task options of a step that talks to the database: up to 3 retries after 5, 10 and 20 s
#: (each +-50 %, so that workers that lost the database together do not return together).
ON_CONNECTION_LOSS: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=5),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": connection_lost,
}


def delivery_name(path: str | Path) -> str:
    """How runs and logs name a delivery: its file or folder name."""
    return Path(path).name


def _load_run_name() -> str:
    return f"load {delivery_name(runtime.flow_run.parameters['path'])}"


def _step_run_name(step: str) -> Callable[[], str]:
    """Task run name ``<step> <delivery>``, the delivery taken from the flow run's ``path``."""

    def name() -> str:
        path = runtime.flow_run.parameters.get("path")
        return f"{step} {delivery_name(path)}" if path else step

    return name


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


@task(name="read", task_run_name=_step_run_name("read"), cache_policy=NO_CACHE)
@_refusable
def read_step(
    path: str, layer: str | None, encoding: str | None, commune: str | None, sheet: int | None
) -> tuple[sources.Source, sources.RawLayer]:
    with progress.step("read") as advance:
        source = sources.open_source(path)
        raw = sources.read_parcel_layer(
            source, layer=layer, encoding=encoding, commune_code=commune, sheet_no=sheet
        )
        advance(len(raw.frame))
    return source, raw


@task(name="map fields", task_run_name=_step_run_name("map fields"), cache_policy=NO_CACHE)
@_refusable
def map_step(
    raw: sources.RawLayer,
    commune: str | None,
    sheet: int | None,
    mapping: str | None,
    scale: int | None,
):
    fields = sources.load_mapping(mapping) if mapping else None
    with progress.step("map fields", total=len(raw.frame)):
        return sources.map_fields(
            raw.frame,
            commune_code=commune,
            sheet_no=sheet,
            mapping=fields,
            map_scale=scale,
            text_nfc=True,  # read_parcel_layer decoded it to NFC
        )


@task(name="reproject", task_run_name=_step_run_name("reproject"), cache_policy=NO_CACHE)
@_refusable
def reproject_step(parcels: gpd.GeoDataFrame, crs: str | None, source_name: str):
    with progress.step("reproject", total=len(parcels)):
        decision = sources.decide_crs(parcels, declared=crs, source_name=source_name)
        return decision, sources.to_storage(parcels, decision)


@task(
    name="compare",
    task_run_name=_step_run_name("compare"),
    cache_policy=NO_CACHE,
    **ON_CONNECTION_LOSS,
)
def compare_step(settings: Settings, delivery: Delivery) -> tuple[register.Look, np.ndarray]:
    """What the register holds of the delivery's sheets, and which delivered parcels it holds
    unchanged (by content hash)."""
    engine = make_engine(settings)
    try:
        ensure_current(engine, upgrade_if_needed=settings.database_url is None)
        with progress.step("compare with register", total=len(delivery.parcels)):
            return look_at_register(engine, delivery)
    finally:
        engine.dispose()


@task(name="validate", task_run_name=_step_run_name("validate"), cache_policy=NO_CACHE)
def validate_step(delivery: Delivery, unchanged: np.ndarray | None = None) -> Validation:
    with progress.step("validate", total=len(delivery.parcels)):
        return validate(delivery.parcels, delivery.findings, unchanged=unchanged)


@task(
    name="load", task_run_name=_step_run_name("load"), cache_policy=NO_CACHE, **ON_CONNECTION_LOSS
)
def load_step(
    settings: Settings,
    delivery: Delivery,
    validation: Validation,
    started_at: datetime,
    look: register.Look | None = None,
    options: dict[str, Any] | None = None,
    force: bool = False,
):
    engine = make_engine(settings)
    try:
        ensure_current(engine, upgrade_if_needed=settings.database_url is None)
        with progress.step("load", total=len(delivery.parcels)):
            return load(
                engine,
                delivery,
                validation,
                started_at=started_at,
                look=look,
                options=options,
                force=force,
            )
    finally:
        engine.dispose()


@task(
    name="record refusal",
    task_run_name=_step_run_name("record refusal"),
    cache_policy=NO_CACHE,
    **ON_CONNECTION_LOSS,
)
def refuse_step(
    settings: Settings, path: str, error: DeliveryError, started_at: datetime, options
) -> int | None:
    """Record a refused delivery as a failed batch, when there is content to fingerprint."""
    delivered = Path(path)
    if not delivered.exists():
        return None
    try:
        sha256 = fingerprint(delivered)
    except (OSError, DeliveryError):  # not there, or not to be read: nothing to record it by
        return None
    engine = make_engine(settings)
    try:
        ensure_current(engine, upgrade_if_needed=settings.database_url is None)
        return record_refusal(
            engine,
            source_path=str(delivered.resolve()),
            sha256=sha256,
            driver=DRIVERS.get(delivered.suffix.lower()),
            error=str(error),
            started_at=started_at,
            options=options,
        )
    finally:
        engine.dispose()


@task(name="report", cache_policy=NO_CACHE, **ON_CONNECTION_LOSS)
def report_step(settings: Settings, batch: int, folder: str) -> dict[str, str]:
    """Write the quality report of ``batch`` into ``folder`` (or LANDPIPE_HOME/reports when
    that cannot be written) and publish it as a Prefect artifact.

    The files are named by :func:`landpipe.report.write_report`: the delivery's file name and
    the batch id (``thua_dat_22924.shp.batch-3.report.html``, ``....findings.gpkg``).
    """
    from landpipe.report import publish_artifact

    engine = make_engine(settings)
    try:
        with progress.step("report") as advance:
            report = write_report_or_fallback(engine, batch, Path(folder), settings.home)
            advance(1)
    finally:
        engine.dispose()
    if report.html.parent != Path(folder):
        get_run_logger().warning(
            "cannot write into %s: report written into %s", folder, report.html.parent
        )
    publish_artifact(report)
    return {"html": str(report.html), "gpkg": str(report.gpkg)}


def write_delivery_report(
    settings: Settings, batch: int | None, folder: Path, delivery: str
) -> dict[str, str] | None:
    """Run :func:`report_step`; a report that cannot be written is logged, and the load stands."""
    if batch is None:
        return None
    step = report_step.with_options(task_run_name=f"report {delivery}")
    state = step(settings, batch, str(folder), return_state=True)
    if state.is_completed():
        return state.result()
    get_run_logger().error("report of batch %s not written: %s", batch, state.message)
    return None


@flow(name="load_delivery", flow_run_name=_load_run_name, log_prints=True)
def load_delivery(
    path: str,
    commune: str | None = None,
    sheet: int | None = None,
    crs: str | None = None,
    layer: str | None = None,
    encoding: str | None = None,
    mapping: str | None = None,
    scale: int | None = None,
    report: bool = True,
    report_dir: str | None = None,
    force: bool = False,
) -> State:
    """Load one survey delivery into the land register.

    A file loaded before and read otherwise now (another option) is refused when other
    deliveries changed its sheets since: loaded, it would undo them; ``force`` loads it anyway.

    Returns a Completed state holding the load summary (``LoadResult.as_json()``), or a
    Failed state holding it when the delivery cannot be used as a whole. With ``report`` the
    batch's quality report is written into ``report_dir``, by default beside the delivery
    (``$LANDPIPE_HOME/reports`` when that folder cannot be written), and its paths are added
    to the summary as ``"report": {"html": ..., "gpkg": ...}`` (None when none was written).
    """
    logger = get_run_logger()
    settings = Settings()
    started_at = datetime.now(UTC)

    def say(step: str, message: str, *args: Any) -> None:
        logger.info("%s, %s: " + message, delivery_name(path), step, *args)

    options: dict[str, Any] = {
        "commune": commune,
        "sheet": sheet,
        "crs": crs,
        "layer": layer,
        "encoding": encoding,
        "mapping": mapping,
        "scale": scale,
    }
    if force:
        options["force"] = True
    # The steps make millions of objects: no cyclic collection until they are done.
    with collector_paused():
        try:
            source, raw = _unwrap(read_step(path, layer, encoding, commune, sheet))
            say(
                "read",
                "%d records from %s (layer %s), text %s (%s, confidence %.2f)",
                len(raw.frame),
                source.path,
                raw.layer,
                raw.text.encoding,
                raw.text.how,
                raw.text.confidence,
            )
            parcels, used = _unwrap(map_step(raw, commune, sheet, mapping, scale))
            say("map fields", "%s: %s", "option" if mapping else "detected", used)
            decision, parcels = _unwrap(reproject_step(parcels, crs, str(source.path)))
            say("reproject", "CRS %s (%s), reprojected to EPSG:9218", decision.label, decision.how)
            delivery = Delivery.assemble(
                source,
                raw,
                used,
                decision,
                parcels,
                mapping_how="option" if mapping else "detected",
                fills={"commune": commune, "sheet": sheet, "scale": scale},
            )
            look, unchanged = compare_step(settings, delivery)
            say(
                "compare",
                "%d of %d parcels unchanged in the register",
                unchanged.sum(),
                len(delivery.parcels),
            )
            validation = validate_step(delivery, unchanged)
            result: LoadResult = load_step(
                settings, delivery, validation, started_at, look, options, force
            )
        except DeliveryError as error:
            say("refused", "%s", error)
            batch = refuse_step(settings, path, error, started_at, options)
            summary = LoadResult(
                batch=batch,
                status="failed",  # as land.batch records a delivery refused as a whole
                source=path,
                error=str(error),
                error_kind=type(error).__name__,
            )
            body = summary.as_json()
            body["report"] = _report(settings, path, batch, report, report_dir)
            return Failed(message=str(error), data=body)
    say(
        "load",
        "batch %s %s: %d read, %d loaded, %d repaired, %d rejected",
        result.batch,
        result.status,
        result.read,
        result.loaded,
        result.repaired,
        result.rejected,
    )
    body = result.as_json()
    body["report"] = _report(settings, path, result.batch, report, report_dir)
    return Completed(message=f"batch {result.batch} {result.status}", data=body)


def _report(
    settings: Settings, path: str, batch: int | None, wanted: bool, report_dir: str | None
) -> dict[str, str] | None:
    if not wanted:
        return None
    folder = report_folder(Path(path), report_dir, settings.home)
    return write_delivery_report(settings, batch, folder, delivery_name(path))
