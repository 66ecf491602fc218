"""The ``revalidate`` flow: the rule catalogue over the current parcels, commune by commune.

One task run per commune (``revalidate 22924``), each one transaction under the commune's
advisory lock (:func:`landpipe.revalidate.revalidate_commune`). The communes fan out over

- a pool of worker **processes**, one per core, on the machine that runs the flow
  (:class:`prefect.task_runners.ProcessPoolTaskRunner`: validation is numpy, shapely and
  pandas work that holds the GIL much of the time, so threads alone would not use the cores);
- or a **Dask cluster** when a scheduler address is given (``dask_address``, else the
  environment variable ``LANDPIPE_DASK_ADDRESS``), through prefect-dask's ``DaskTaskRunner``.
  The cluster's workers need landpipe installed and must reach the database.

Each commune's result depends only on the register, never on where or in which order the
communes ran, so both give the same findings. A commune that fails (after the retries on a
lost connection) does not stop the others; the flow then ends Failed, listing it.
"""

from __future__ import annotations

import os
import re
from typing import Any

from prefect import flow, get_run_logger, runtime, task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.states import Completed, Failed, State
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner

from landpipe import schemas
from landpipe.config import Settings
from landpipe.db import make_engine
from landpipe.errors import ConfigError
from landpipe.flows.load_delivery import ON_CONNECTION_LOSS
from landpipe.migrate import ensure_current
from landpipe.revalidate import communes_in_register, revalidate_commune

#: Environment variable naming the Dask scheduler to run on (``tcp://host:8786``).
DASK_ADDRESS_ENV = "LANDPIPE_DASK_ADDRESS"


def task_runner(dask_address: str | None = None) -> TaskRunner:
    """Dask at ``dask_address`` (or ``$LANDPIPE_DASK_ADDRESS``), else local worker processes."""
    address = dask_address or os.environ.get(DASK_ADDRESS_ENV) or None
    if address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=address)
    _share_api_with_subprocesses()
    return ProcessPoolTaskRunner(max_workers=os.cpu_count() or 1)


def _share_api_with_subprocesses() -> None:
    """Have the worker processes report to the Prefect API this run reports to.

    They inherit the environment, not this process's settings: without PREFECT_API_URL (the
    temporary server of a run with no Prefect server configured, or settings given in code)
    each would start a temporary server of its own, slowly, and its task runs would be lost.
    """
    if os.environ.get("PREFECT_API_URL"):
        return
    with get_client(sync_client=True) as client:
        os.environ["PREFECT_API_URL"] = str(client.api_url).rstrip("/")


def _run_name() -> str:
    communes = runtime.flow_run.parameters.get("communes")
    if not communes:
        return "revalidate all communes"
    if len(communes) > 3:
        return f"revalidate {len(communes)} communes"
    return "revalidate " + ", ".join(communes)


@task(name="communes", task_run_name="list communes", cache_policy=NO_CACHE, **ON_CONNECTION_LOSS)
def communes_step(settings: Settings, communes: list[str] | None) -> list[str]:
    """The communes to revalidate, largest first: those asked for, or all in the register."""
    engine = make_engine(settings)
    try:
        ensure_current(engine, upgrade_if_needed=settings.database_url is None)
        present = communes_in_register(engine)
    finally:
        engine.dispose()
    if communes is None:
        return present
    wanted = set(communes)
    return [code for code in present if code in wanted] + sorted(wanted - set(present))


@task(
    name="revalidate commune",
    task_run_name="revalidate {commune_code}",
    cache_policy=NO_CACHE,
    **ON_CONNECTION_LOSS,
)
def revalidate_step(settings: Settings, commune_code: str) -> dict[str, Any]:
    engine = make_engine(settings)
    try:
        return revalidate_commune(engine, commune_code).as_json()
    finally:
        engine.dispose()


@flow(name="revalidate communes", flow_run_name=_run_name)
def revalidate_communes(communes: list[str]) -> list[dict[str, Any]]:
    """Revalidate ``communes`` side by side on this flow run's task runner."""
    logger = get_run_logger()
    settings = Settings()
    futures = revalidate_step.map(unmapped(settings), communes)
    results = []
    for code, future in zip(communes, futures, strict=True):
        future.wait()
        state = future.state
        if state.is_completed():
            result = future.result()
            logger.info(
                "%s: %d parcels, %d findings, %d closed; %d blocked, %d ready",
                code,
                result["parcels"],
                sum(result["findings"].values()),
                result["closed"],
                result["blocked"],
                result["ready"],
            )
        else:
            result = {"commune_code": code, "status": "error", "error": state.message}
            logger.error("%s: not revalidated: %s", code, state.message)
        results.append(result)
    return results


@flow(name="revalidate", flow_run_name=_run_name, log_prints=True)
def revalidate(communes: list[str] | None = None, dask_address: str | None = None) -> State:
    """Re-run the rule catalogue over the current parcels of ``communes`` (None: all).

    Findings are refreshed without reloading parcels: see :mod:`landpipe.revalidate`. Returns
    a Completed state holding ``{"communes": [...], "runner": ...}`` (one result per commune),
    or a Failed one holding it when a commune could not be revalidated.
    """
    logger = get_run_logger()
    settings = Settings()
    if communes is not None:
        bad = [code for code in communes if not re.fullmatch(r"[0-9]{5}", code)]
        if bad:
            raise ConfigError(f"not 5-digit commune codes: {', '.join(bad)}")
        unknown = [code for code in communes if code not in schemas.commune_codes()]
        if unknown:  # a typo would revalidate nothing, as a success
            raise ConfigError(f"not communes of the province: {', '.join(unknown)}")
    codes = communes_step(settings, communes)
    runner = task_runner(dask_address)
    where = f"Dask at {runner.address}" if getattr(runner, "address", None) else "local processes"
    logger.info("revalidating %d communes on %s", len(codes), where)
    results = revalidate_communes.with_options(task_runner=runner)(codes) if codes else []
    summary = {"communes": results, "runner": where}
    failed = [r["commune_code"] for r in results if r["status"] == "error"]
    message = f"{len(results) - len(failed)} communes revalidated" + (
        f", {len(failed)} failed ({', '.join(failed)})" if failed else ""
    )
    if failed:
        return Failed(message=message, data=summary)
    return Completed(message=message, data=summary)
