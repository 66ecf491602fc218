"""The ``scheduled_inbox`` flow: load every new delivery of an inbox folder, then file it away.

For each delivery found (see :func:`landpipe.inbox.scan_inbox`), side by side (one per core)
and each on its own (a delivery that fails never stops the others):

1. **check**: is its content (SHA-256) already a batch? Then it is not loaded again;
2. **load**: the ``load_delivery`` flow, as a subflow run named ``load <delivery>``;
3. **archive** or **move to failed**: all its files into a new folder of ``<inbox>/archive/``
   (loaded, or loaded before) or ``<inbox>/failed/`` (refused, or not one parcel usable);
4. **report**: its quality report beside it there.

A run stopped halfway is simply run again: what it had loaded is found by its content hash and
only filed away. A delivery whose database work failed even after the retries (the database
was unreachable) stays in the inbox for the next run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from prefect import flow, get_run_logger, runtime, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, Failed, State
from prefect.task_runners import ThreadPoolTaskRunner

from landpipe.config import Settings
from landpipe.db import make_engine
from landpipe.errors import ConfigError
from landpipe.flows.load_delivery import (
    ON_CONNECTION_LOSS,
    database_unreachable,
    load_delivery,
    write_delivery_report,
)
from landpipe.inbox import (
    ARCHIVE,
    FAILED,
    InboxDelivery,
    Scan,
    destination,
    inbox_lock,
    move_delivery,
    scan_inbox,
)
from landpipe.migrate import ensure_current

#: Environment variable naming the inbox folder.
INBOX_ENV = "LANDPIPE_INBOX"
#: Where a delivery goes, by the status of its batch.
_FOLDER_OF = {"loaded": ARCHIVE, "unchanged": ARCHIVE, "rejected": FAILED, "failed": FAILED}


def _inbox_run_name() -> str:
    given = runtime.flow_run.parameters.get("inbox") or os.environ.get(INBOX_ENV) or "?"
    return f"inbox {Path(given).name}"


def inbox_folder(inbox: str | None) -> Path:
    """The inbox to process: ``inbox``, else the run's ``$LANDPIPE_INBOX``.

    A deployment made with ``LANDPIPE_INBOX`` unset has an empty ``inbox`` parameter; it is
    never taken for the current folder.
    """
    given = (inbox or "").strip() or os.environ.get(INBOX_ENV, "").strip()
    if not given:
        raise ConfigError(
            f"no inbox folder: pass the inbox parameter, or set {INBOX_ENV} (before "
            "`prefect deploy`, or in the worker's environment)"
        )
    return Path(given).expanduser().resolve()


@task(name="scan", task_run_name="scan {inbox}", cache_policy=NO_CACHE)
def scan_step(inbox: str, quiet_seconds: float) -> Scan:
    return scan_inbox(Path(inbox), quiet_seconds)


@task(name="check", cache_policy=NO_CACHE, **ON_CONNECTION_LOSS)
def check_step(settings: Settings, sha256: str) -> tuple[int, str] | None:
    """A batch of this content read as the inbox reads it (with no option), a loaded one
    first, else the earliest: (id, status), or None. A batch of a load given options (a
    technician's, on the command line) says nothing of how the inbox's load would go. Nor
    does the inbox load content again that a technician loaded since with options: that load
    may be the right one (a mapping the detection missed); a person puts it right with
    ``landpipe load``."""
    engine = make_engine(settings)
    try:
        ensure_current(engine, upgrade_if_needed=settings.database_url is None)
        with engine.connect() as connection:
            row = connection.execute(
                sa.text(
                    "SELECT id, status FROM land.batch WHERE source_sha256 = :sha"
                    " AND jsonb_strip_nulls(options) = '{}'::jsonb"
                    " ORDER BY status <> 'loaded', id LIMIT 1"
                ),
                {"sha": sha256},
            ).first()
    finally:
        engine.dispose()
    return None if row is None else (int(row[0]), str(row[1]))


@task(name="move", cache_policy=NO_CACHE)
def move_step(delivery: InboxDelivery, target: str) -> str:
    return str(move_delivery(delivery, Path(target)))


def process_delivery(settings: Settings, inbox: Path, delivery: InboxDelivery) -> dict[str, Any]:
    """Check, load, file away and report one delivery; the outcome as a JSON-able dict."""
    logger = get_run_logger()
    name = delivery.name
    outcome: dict[str, Any] = {
        "delivery": name,
        "sha256": delivery.sha256,
        "status": None,
        "batch": None,
        "moved_to": None,
        "report": None,
    }
    earlier = check_step.with_options(task_run_name=f"check {name}")(settings, delivery.sha256)
    if earlier is not None:
        outcome["batch"], status = earlier
        outcome["status"] = "loaded before" if status == "loaded" else "refused before"
        folder = ARCHIVE if status == "loaded" else FAILED
        logger.info("%s, check: content already processed as batch %s (%s)", name, *earlier)
    else:
        state = load_delivery(path=str(delivery.path), report=False, return_state=True)
        summary = state.result(raise_on_failure=False)
        if not isinstance(summary, dict):
            outcome["status"] = "deferred" if database_unreachable(summary) else "error"
            outcome["error"] = f"{type(summary).__name__}: {summary}"
            if outcome["status"] == "deferred":
                logger.error("%s, load: database unreachable, left in the inbox: %s", name, summary)
                return outcome
            logger.error("%s, load: failed unexpectedly: %s", name, state.message)
            folder = FAILED
        else:
            outcome.update(status=summary["status"], batch=summary["batch"], load=summary)
            if summary.get("error"):
                outcome["status"] = "failed"
                outcome["error"] = summary["error"]
            folder = _FOLDER_OF[outcome["status"]]
            logger.info("%s, load: batch %s %s", name, outcome["batch"], outcome["status"])
    target = destination(inbox, delivery, folder, outcome["batch"])
    step = "archive" if folder == ARCHIVE else "move to failed"
    outcome["moved_to"] = move_step.with_options(task_run_name=f"{step} {name}")(
        delivery, str(target)
    )
    logger.info("%s, %s: moved to %s", name, step, target)
    if outcome.get("error") and outcome["batch"] is None:
        (target / f"{delivery.stem}_error.txt").write_text(outcome["error"] + "\n")
    outcome["report"] = write_delivery_report(settings, outcome["batch"], target, name)
    if outcome["report"]:
        logger.info("%s, report: %s", name, outcome["report"]["html"])
    return outcome


@task(name="deliver", cache_policy=NO_CACHE)
def deliver_step(settings: Settings, inbox: Path, delivery: InboxDelivery) -> dict[str, Any]:
    """One delivery, start to end; its failure is its outcome, never the others'."""
    try:
        return process_delivery(settings, inbox, delivery)
    except Exception as error:  # one delivery's failure never stops the others
        get_run_logger().exception("%s: not processed", delivery.name)
        return {"delivery": delivery.name, "status": "error", "error": str(error)}


@flow(
    name="scheduled_inbox",
    flow_run_name=_inbox_run_name,
    log_prints=True,
    # Deliveries are processed side by side, one per core: reading and validating hold the
    # GIL only in part, and loads of one commune wait for each other in the database.
    task_runner=ThreadPoolTaskRunner(max_workers=os.cpu_count() or 1),
)
def scheduled_inbox(inbox: str | None = None, quiet_seconds: float = 60) -> State:
    """Load the new deliveries of the folder ``inbox``, file each away with its report.

    ``inbox`` defaults to ``$LANDPIPE_INBOX``. Deliveries changed less than ``quiet_seconds``
    ago are still being copied in and wait for the next run. Returns a Completed state
    holding the summary of every delivery, or a Failed one holding it when a delivery could
    not be processed (the database was unreachable, or an unexpected error); refused
    deliveries are expected outcomes, filed in ``failed/``.
    """
    logger = get_run_logger()
    settings = Settings()
    folder = inbox_folder(inbox)
    with inbox_lock(folder):
        scan = scan_step(str(folder), quiet_seconds)
        if scan.arriving:
            logger.info("still being copied in, left for the next run: %s", scan.arriving)
        if scan.ignored:
            logger.info("not deliveries, left where they are: %s", scan.ignored)
        if scan.misnamed:
            logger.warning(
                "names not UTF-8 (TCVN3, VNI or Windows-1258?), left where they are until"
                " renamed: %s",
                scan.misnamed,
            )
        if scan.unreadable:
            logger.warning("cannot be read, left where they are: %s", scan.unreadable)
        futures = [
            deliver_step.with_options(task_run_name=f"deliver {delivery.name}").submit(
                settings, folder, delivery
            )
            for delivery in scan.deliveries
        ]
        outcomes = [future.result() for future in futures]
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome["status"]] = counts.get(outcome["status"], 0) + 1
    summary = {
        "inbox": str(folder),
        "deliveries": outcomes,
        "counts": dict(sorted(counts.items())),
        "arriving": scan.arriving,
        "ignored": scan.ignored,
        "misnamed": scan.misnamed,
        "unreadable": scan.unreadable,
    }
    message = f"{len(outcomes)} deliveries: " + (
        ", ".join(f"{n} {status}" for status, n in summary["counts"].items()) or "none"
    )
    logger.info(message)
    if counts.get("error") or counts.get("deferred"):
        return Failed(message=message, data=summary)
    return Completed(message=message, data=summary)
