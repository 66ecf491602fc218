"""The ``landpipe`` command."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from landpipe.config import Settings
from landpipe.errors import ConfigError, LandpipeError, exit_code, exit_code_of

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

T = TypeVar("T")

app = typer.Typer(
    help="landpipe: load cadastral survey deliveries into a PostGIS land register.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Help paragraphs reflowed to the terminal's width, ``code`` shown as code.
    rich_markup_mode="markdown",
)
db_app = typer.Typer(
    help="The database: the embedded PostGIS cluster, or LANDPIPE_DATABASE_URL.",
    rich_markup_mode="markdown",
)
app.add_typer(db_app, name="db")


def _fail(error: LandpipeError) -> None:
    typer.echo(f"landpipe: {error}", err=True)
    raise typer.Exit(exit_code(error))


def _settings() -> Settings:
    return Settings()


def prepare_prefect(settings: Settings, *, verbose: bool = False) -> None:
    """Keep Prefect's local state under LANDPIPE_HOME unless the user configured Prefect.

    Prefect's run logs always reach the Prefect API (and its UI); on the terminal they are
    shown only with ``--verbose``, so that the summary and one-line errors stand out.
    """
    os.environ.setdefault("PREFECT_HOME", str(_prefect_home(settings)))
    Path(os.environ["PREFECT_HOME"]).expanduser().mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    # The first run creates Prefect's database; on a busy machine that outlasts the default.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "ERROR")


def _prefect_home(settings: Settings) -> Path:
    """Prefect's home: as configured (``PREFECT_HOME``), else under LANDPIPE_HOME."""
    configured = os.environ.get("PREFECT_HOME")
    return (Path(configured).expanduser() if configured else settings.home / "prefect").resolve()


@contextlib.contextmanager
def _prefect_api() -> Iterator[None]:
    """Prefect's API as configured; else that of landpipe's local server, started if none
    runs (:mod:`landpipe.prefect_server`), for this process and the ones it starts.
    :func:`prepare_prefect` has set ``PREFECT_HOME``."""
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    if get_current_settings().api.url:
        yield
        return
    from landpipe import prefect_server

    url, started = prefect_server.api_url(Path(os.environ["PREFECT_HOME"]).expanduser())
    if started:
        typer.echo(
            f"landpipe: started a local Prefect server (UI at {url.removesuffix('/api')});"
            " later commands use it, `landpipe db stop` stops it",
            err=True,
        )
    os.environ["PREFECT_API_URL"] = url  # for the processes a flow starts (Dask workers)
    try:
        with temporary_settings({PREFECT_API_URL: url}):
            yield
    finally:
        os.environ.pop("PREFECT_API_URL", None)


def _run_flow(flow, **parameters: Any):
    """Run ``flow`` once, here, and return its final state.

    Raises
    ------
    ConfigError
        Prefect itself could not run (its API server did not start or cannot be reached).
    """
    try:
        with _prefect_api():
            return flow(return_state=True, **parameters)
    except (RuntimeError, OSError) as error:
        # The flow body's own errors come back as its state; these are Prefect's, before it.
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(
            f"Prefect could not run the flow ({reason}); check PREFECT_API_URL, or run again"
        ) from error


def _flow_summary(state, what: str) -> dict[str, Any]:
    """The summary a flow returned, or exit with one line when it returned none."""
    summary = state.result(raise_on_failure=False)
    if isinstance(summary, LandpipeError):
        _fail(summary)
    if not isinstance(summary, dict):
        # An unexpected failure inside the flow: Prefect has logged it with its traceback.
        typer.echo(f"landpipe: {what} failed: {state.message}", err=True)
        raise typer.Exit(1)
    return summary


def _check_commune_codes(codes: list[str], name: str = "--commune") -> None:
    """Exit 2 (a usage error) on a commune code (given as ``name``) that is not 5 digits."""
    for code in codes:
        if not re.fullmatch(r"[0-9]{5}", code):  # ASCII: "２２９２４" is no code the register holds
            typer.echo(f"landpipe: {name} {code!r} is not a 5-digit commune code", err=True)
            raise typer.Exit(2)


def _on_register(work: Callable[[Engine, Settings], T]) -> T:
    """``work(engine, settings)`` on the register (upgraded first when it is the embedded
    one); a landpipe error, the connection's included, ends the command in one line."""
    from landpipe.db import make_engine
    from landpipe.migrate import ensure_current

    settings = _settings()
    try:
        engine = make_engine(settings)
        try:
            ensure_current(engine, upgrade_if_needed=settings.database_url is None)
            return work(engine, settings)
        finally:
            engine.dispose()
    except LandpipeError as error:
        _fail(error)


JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
CommuneArgument = Annotated[str, typer.Argument(help="Commune code (5 digits).")]
SheetArgument = Annotated[int, typer.Argument(min=1, help="Map sheet number.")]
ParcelArgument = Annotated[int, typer.Argument(min=1, help="Parcel number on the sheet.")]
VerboseOption = Annotated[
    bool, typer.Option("--verbose", "-v", help="Show Prefect's run logs on stderr.")
]


@app.command("load")
def load_command(
    path: Annotated[
        Path,
        typer.Argument(
            help="The delivery: .shp, .gpkg, .geojson, .dxf, .dgn, a .gdb or Shapefile folder, "
            "or a .zip of any of these."
        ),
    ],
    commune: Annotated[
        str | None, typer.Option(help="Commune code (5 digits) for records that do not carry one.")
    ] = None,
    sheet: Annotated[
        int | None,
        typer.Option(min=1, help="Map sheet number for records that do not carry one."),
    ] = None,
    scale: Annotated[
        int | None,
        typer.Option(
            min=1, help="Map scale denominator (1000 for 1:1000) for records without one."
        ),
    ] = None,
    crs: Annotated[
        str | None,
        typer.Option(help="CRS of the delivery (e.g. EPSG:9218); overrides the file's."),
    ] = None,
    layer: Annotated[
        str | None, typer.Option(help="The parcel layer, when the delivery holds several.")
    ] = None,
    encoding: Annotated[
        str | None,
        typer.Option(help="Text encoding of the attributes: utf-8, cp1258, tcvn3 or vni."),
    ] = None,
    mapping: Annotated[
        Path | None,
        typer.Option(help="YAML file of 'canonical_field: DeliveredField' lines; wins."),
    ] = None,
    report: Annotated[
        bool,
        typer.Option(help="Write the batch's quality report (HTML and GeoPackage)."),
    ] = True,
    report_dir: Annotated[
        Path | None,
        typer.Option(
            help="Folder for the report; default: beside the delivery, or "
            "$LANDPIPE_HOME/reports when that folder cannot be written."
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Load a file loaded before, read otherwise now, even though newer deliveries "
            "changed its sheets since (it undoes them; refused otherwise, exit 15).",
        ),
    ] = False,
    as_json: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Read, reproject, validate and load one delivery (the Prefect flow load_delivery).

    A progress bar per step is shown on a terminal (not with --json, not into a pipe).
    """
    settings = _settings()
    _check_commune_codes([commune] if commune is not None else [])
    if encoding is not None:
        from landpipe.sources.text import parse_option

        try:
            parse_option(encoding)
        except LandpipeError as error:
            typer.echo(f"landpipe: {error}", err=True)
            raise typer.Exit(2) from error
    prepare_prefect(settings, verbose=verbose)
    from landpipe import progress
    from landpipe.flows.load_delivery import load_delivery

    bars = not as_json and sys.stderr.isatty()
    try:
        with progress.showing(sys.stderr, enabled=bars):
            state = _run_flow(
                load_delivery,
                path=str(path),
                commune=commune,
                sheet=sheet,
                crs=crs,
                layer=layer,
                encoding=encoding,
                mapping=str(mapping) if mapping else None,
                scale=scale,
                report=report,
                report_dir=str(report_dir) if report_dir else None,
                force=force,
            )
    except LandpipeError as error:
        _fail(error)
    summary = _flow_summary(state, f"load of {path}")
    if as_json:
        typer.echo(json.dumps(summary, ensure_ascii=False))
    else:
        typer.echo(format_summary(summary))
    if state.is_failed():
        # On a terminal the summary just showed the error: say it again only where it went
        # elsewhere (--json, or the summary redirected to a file).
        shown = not as_json and summary.get("error") and sys.stdout.isatty() and sys.stderr.isatty()
        if not shown:
            typer.echo(f"landpipe: {summary.get('error') or state.message}", err=True)
        raise typer.Exit(exit_code_of(summary.get("error_kind")))


def format_summary(summary: dict[str, Any]) -> str:
    """The human summary of a load."""
    counts = summary["parcels"]
    if summary.get("error"):
        recorded = f"batch {summary['batch']}" if summary["batch"] is not None else "not recorded"
        lines = [f"{recorded}: refused ({summary.get('source')})", f"  {summary['error']}"]
        return "\n".join(lines + _report_lines(summary))
    reading = summary.get("reading", {})
    mapping = ", ".join(f"{k}={v}" for k, v in reading.get("field_mapping", {}).items())
    lines = [
        f"batch {summary['batch']}: {summary['status']}  ({summary.get('source')})",
        f"  commune {summary.get('commune_code')}; layer {reading.get('layer')} "
        f"({reading.get('format')}{', from linework' if reading.get('linework') else ''})",
        f"  CRS {summary.get('crs')} ({reading.get('crs_how')}); text "
        f"{reading.get('encoding')} ({reading.get('encoding_how')}, confidence "
        f"{reading.get('encoding_confidence')}"
        + (
            f", .cpg said {reading['encoding_declared']}"
            if reading.get("encoding_declared")
            else ""
        )
        + ")",
        f"  fields ({reading.get('field_mapping_how')}): {mapping}",
        f"  parcels: {counts['read']} read, {counts['loaded']} loaded, "
        f"{counts['repaired']} repaired, {counts['rejected']} rejected",
    ]
    changes = summary.get("changes")
    if changes and summary["status"] != "unchanged":
        closed = summary.get("closed", 0)
        lines.append(
            f"  register: {changes['added']} added, {changes['changed']} changed, "
            f"{changes['unchanged']} unchanged, {changes['retired']} retired"
            + (f"; {closed} findings of earlier batches closed" if closed else "")
        )
    if summary["issues"]:
        from landpipe import schemas

        rules = schemas.rules()
        lines.append("  findings:")
        for code, n in summary["issues"].items():
            rule = rules.get(code)
            severity = rule.severity if rule else "?"
            lines.append(f"    {code:<24} {severity:<7} {n:>6}")
    lines += _report_lines(summary)
    if summary["batch"] is not None and summary["status"] != "unchanged":
        lines.append(
            f"  details: SELECT * FROM land.finding WHERE batch_id = {summary['batch']};"
            f"  SELECT * FROM land.rejected_record WHERE batch_id = {summary['batch']};"
        )
    return "\n".join(lines)


@app.command("report")
def report_command(
    batch: Annotated[int, typer.Argument(help="The batch (land.batch id) to report on.")],
    out: Annotated[
        Path | None,
        typer.Option(
            help="Folder to write into. Default: beside the delivery if that folder is "
            "writable, else $LANDPIPE_HOME/reports."
        ),
    ] = None,
) -> None:
    """Write a batch's quality report: an HTML page and a GeoPackage of its findings.

    Prints the paths of the two files (replaced if they exist).
    """
    from landpipe.report import report_folder, write_report

    def write(engine, settings):
        folder = out if out is not None else report_folder(engine, batch, settings.home)
        try:
            return write_report(engine, batch, folder)
        except OSError as error:
            reason = error.strerror or str(error)
            raise ConfigError(f"cannot write the report into {folder}: {reason}") from error

    report = _on_register(write)
    typer.echo(report.html)
    typer.echo(report.gpkg)


def _report_lines(summary: dict[str, Any]) -> list[str]:
    report = summary.get("report")
    if not report:
        return []
    return [f"  report: {report['html']}", f"          {report['gpkg']}"]


@app.command("parcel")
def parcel_command(
    commune: CommuneArgument,
    sheet: SheetArgument,
    parcel: ParcelArgument,
    as_json: JsonOption = False,
) -> None:
    """Show what a certificate needs of a current parcel.

    Its data, whether it is ready for a certificate (and why not), the findings in force, the
    certificates issued on it, its neighbours and the coordinate table of its vertices (X
    northing, Y easting, VN-2000). Exits 1 when the key has no current parcel.
    """
    from landpipe.extract import parcel_extract

    _check_commune_codes([commune], "COMMUNE")
    extract = _on_register(lambda engine, _: parcel_extract(engine, commune, sheet, parcel))
    if as_json:
        typer.echo(json.dumps(extract, ensure_ascii=False))
    if not extract["found"]:
        retired = extract["retired"]
        typer.echo(
            f"landpipe: no current parcel {commune}/{sheet}/{parcel}"
            + (
                f" (retired by batch {retired['batch']} at {retired['at']})"
                if retired and retired["batch"] is not None
                else ""
            )
            + "".join(
                f"; delivered in batch {r['batch_id']} (row {r['source_row']}) and not loaded:"
                f" {', '.join(r['rule_codes'])}"
                for r in extract["rejected"][:1]
            )
            + "".join(
                f"; certificate {f['certificate']} flagged ({f['change']}) by batch {f['batch_id']}"
                for f in extract["certificate_flags"]
            )
            + (
                f": review with landpipe review {commune} {sheet} {parcel} --batch"
                f" {max(f['batch_id'] for f in extract['certificate_flags'])}"
                if extract["certificate_flags"]
                else ""
            ),
            err=True,
        )
        raise typer.Exit(1)
    if not as_json:
        typer.echo(format_extract(extract))


@app.command("certify")
def certify_command(
    commune: CommuneArgument,
    sheet: SheetArgument,
    parcel: ParcelArgument,
    serial: Annotated[
        str, typer.Option("--serial", help="The certificate's serial number, as printed on it.")
    ],
    holder: Annotated[
        str | None,
        typer.Option("--holder", help="To whom it was issued (default: the parcel's owner)."),
    ] = None,
    issued: Annotated[
        str | None,
        typer.Option("--issued", help="Date of issue, YYYY-MM-DD (default: today in Vietnam)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Record a land-use right certificate issued on a current parcel.

    It is recorded on the parcel's current version, only if the parcel is ready for a
    certificate (``landpipe parcel`` says why not) and the serial is not recorded yet; a load
    of the commune waits meanwhile. The serial is kept in capitals, serial and holder with
    single spaces. Exits 1 when the key has no current parcel, 5 when the certificate is
    refused (not ready, or the serial taken), 2 on a blank or overlong text or a date that is
    not YYYY-MM-DD or lies after today.
    """
    from datetime import date, datetime
    from zoneinfo import ZoneInfo

    from landpipe.extract import MAX_HOLDER, certificate_text, record_certificate, serial_text

    _check_commune_codes([commune], "COMMUNE")
    try:
        serial = serial_text(serial, "--serial")
        holder = None if holder is None else certificate_text(holder, "--holder", MAX_HOLDER)
    except ValueError as error:
        typer.echo(f"landpipe: {error}", err=True)
        raise typer.Exit(2) from None
    issued_on = None
    if issued is not None:
        try:
            if not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", issued):
                raise ValueError
            issued_on = date.fromisoformat(issued)
        except ValueError:
            typer.echo(f"landpipe: --issued {issued!r} is not a date as YYYY-MM-DD", err=True)
            raise typer.Exit(2) from None
        if issued_on > datetime.now(ZoneInfo("Asia/Ho_Chi_Minh")).date():
            typer.echo(f"landpipe: --issued {issued} is after today in Vietnam", err=True)
            raise typer.Exit(2)
    result = _on_register(
        lambda engine, _: record_certificate(
            engine,
            commune,
            sheet,
            parcel,
            serial=serial,
            holder=holder,
            issued_on=issued_on,
            waiting=_say_waiting,
        )
    )
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False))
    where = f"{commune}/{sheet}/{parcel}"
    if result["recorded"]:
        if not as_json:
            typer.echo(
                f"certificate {serial} recorded on parcel {where} (version {result['version_id']},"
                f" holder {result['holder']}, issued {result['issued_on']})"
            )
        return
    if not result["found"]:
        typer.echo(f"landpipe: no current parcel {where}", err=True)
        raise typer.Exit(1)
    if "serial_taken" in result:
        taken = result["serial_taken"]
        typer.echo(
            f"landpipe: certificate {serial} is already recorded, on parcel"
            f" {taken['commune']}/{taken['sheet']}/{taken['parcel']}",
            err=True,
        )
    else:
        typer.echo(
            f"landpipe: parcel {where} is not ready for a certificate: "
            + "; ".join(result["not_ready_because"]),
            err=True,
        )
    raise typer.Exit(5)


@app.command("review")
def review_command(
    commune: CommuneArgument,
    sheet: SheetArgument,
    parcel: ParcelArgument,
    batch: Annotated[
        int,
        typer.Option(
            "--batch",
            min=1,
            help="The batch whose change you reviewed: the latest that flagged the parcel "
            "(`landpipe parcel` lists its CERT_CHANGED findings and their batch).",
        ),
    ],
    by: Annotated[str, typer.Option("--by", help="Who reviewed the change (name, office).")],
    note: Annotated[
        str, typer.Option("--note", help="What the review found: why the data may stand.")
    ],
    as_json: JsonOption = False,
) -> None:
    """Close a certified parcel's CERT_CHANGED findings once a person has reviewed the change.

    A delivery that changes or retires a parcel holding a certificate flags it (CERT_CHANGED,
    a block finding): it is not ready for another certificate until someone compares the new
    data with the certificate. This records that review (who, and what they found, as a batch
    of kind 'review') and closes the parcel's CERT_CHANGED findings; other findings stay. A
    load of the commune waits meanwhile. Prints whether the parcel is now ready.

    Nothing is closed when a batch later than --batch flagged the parcel (a change nobody
    reviewed yet; exit 5). Exits 1 when the parcel has no open CERT_CHANGED finding, 2 on a
    blank or overlong --by or --note.
    """
    from landpipe.extract import MAX_HOLDER, MAX_NOTE, certificate_text, review_certificate_change

    _check_commune_codes([commune], "COMMUNE")
    try:
        by = certificate_text(by, "--by", MAX_HOLDER)
        note = certificate_text(note, "--note", MAX_NOTE)
    except ValueError as error:
        typer.echo(f"landpipe: {error}", err=True)
        raise typer.Exit(2) from None
    result = _on_register(
        lambda engine, _: review_certificate_change(
            engine, commune, sheet, parcel, flagged_by=batch, by=by, note=note,
            waiting=_say_waiting,
        )
    )  # fmt: skip
    if as_json:
        typer.echo(json.dumps(result, ensure_ascii=False))
    where = f"{commune}/{sheet}/{parcel}"
    flags = "; ".join(
        f"CERT_CHANGED of batch {f['made_by_batch']} (certificate {f['certificate']},"
        f" {f['change']})"
        for f in result["open"]
    )
    if not result["open"]:
        typer.echo(f"landpipe: parcel {where} has no open CERT_CHANGED finding", err=True)
        raise typer.Exit(1)
    if not result["reviewed"]:
        latest = result["latest"]
        typer.echo(
            f"landpipe: nothing closed: the latest change that flagged parcel {where} is batch"
            f" {latest}'s, not batch {batch}'s"
            + (" (made since: look at it first, `landpipe parcel`)" if latest > batch else "")
            + f"; open: {flags}",
            err=True,
        )
        raise typer.Exit(5)
    if as_json:
        return
    typer.echo(
        f"reviewed parcel {where} (batch {result['batch']}, by {result['by']}): closed {flags}"
    )
    if not result["current"]:
        typer.echo(f"  parcel {where} has no current version")
    elif result["ready"]:
        typer.echo(f"  parcel {where} is ready for a certificate")
    else:
        typer.echo(
            f"  parcel {where} is not ready for a certificate: "
            + "; ".join(result["not_ready_because"])
        )


def _say_waiting(commune: str) -> None:
    """On stderr: a person's command waits for work on ``commune`` (a load may take minutes)."""
    typer.echo(
        f"landpipe: commune {commune} is being loaded or checked; waiting for that to finish",
        err=True,
    )


def _point(value: str | None, option: str) -> tuple[float, float] | None:
    """Two numbers given as ``A,B`` (exit 2 otherwise)."""
    if value is None:
        return None
    try:
        a, b = (float(part) for part in value.replace(" ", "").split(","))
        if not (math.isfinite(a) and math.isfinite(b)):  # float() takes "nan" and "inf"
            raise ValueError
    except ValueError:
        typer.echo(f"landpipe: {option} {value!r} is not two numbers as A,B", err=True)
        raise typer.Exit(2) from None
    return a, b


@app.command("find")
def find_command(
    owner: Annotated[
        str | None,
        typer.Option(help="Part of the owner's name; case and diacritics do not matter."),
    ] = None,
    at: Annotated[
        str | None,
        typer.Option(help="A point as LATITUDE,LONGITUDE in WGS 84, as a phone's GPS shows it."),
    ] = None,
    xy: Annotated[
        str | None,
        typer.Option(help="A point as X,Y in VN-2000: X northing, Y easting, as certificates."),
    ] = None,
    within: Annotated[
        float,
        typer.Option(min=0, help="With --at or --xy: also parcels this many metres away."),
    ] = 0.0,
    commune: Annotated[str | None, typer.Option(help="Only in this commune.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many parcels.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """Find current parcels by owner or by location.

    One line per parcel: its key (commune/sheet/parcel), owner, area, address, and whether it
    is ready for a certificate (`landpipe parcel` shows one whole). Exits 1 when none is found.
    """
    from landpipe.extract import VIETNAM_LATITUDES, VIETNAM_LONGITUDES, find_parcels

    if sum(given is not None for given in (owner, at, xy)) != 1:
        typer.echo("landpipe: give one of --owner, --at or --xy", err=True)
        raise typer.Exit(2)
    if owner is not None and not owner.strip():
        typer.echo("landpipe: --owner is empty", err=True)
        raise typer.Exit(2)
    if commune is not None:
        _check_commune_codes([commune])
    latlon, point = _point(at, "--at"), _point(xy, "--xy")
    if latlon is not None and not (
        VIETNAM_LATITUDES[0] <= latlon[0] <= VIETNAM_LATITUDES[1]
        and VIETNAM_LONGITUDES[0] <= latlon[1] <= VIETNAM_LONGITUDES[1]
    ):
        typer.echo(
            f"landpipe: --at {at}: not a latitude,longitude in Vietnam (latitude first)", err=True
        )
        raise typer.Exit(2)
    found, more = _on_register(
        lambda engine, _: find_parcels(
            engine,
            owner=owner,
            latlon=latlon,
            xy=point,
            within_m=within,
            commune=commune,
            limit=limit,
        )
    )
    if as_json:
        typer.echo(json.dumps({"parcels": found, "more": more}, ensure_ascii=False))
    else:
        for p in found:
            distance = p.get("distance_m")
            away = f"  {distance} m away" if distance not in (None, "0.00") else ""
            typer.echo(
                f"{p['commune_code']}/{p['sheet_no']}/{p['parcel_no']}  {p['owner_name'] or '-'}"
                f"  {p['area_m2']} m²  {p['address'] or '-'}"
                f"  {'ready' if p['ready'] else 'not ready'}{away}"
            )
    if more and not as_json:
        typer.echo(
            f"landpipe: more than {limit} parcels found, the first {limit} shown"
            " (--limit to show more)",
            err=True,
        )
    if not found:
        if not as_json:
            swapped = point is not None and point[0] < point[1]
            typer.echo(
                "landpipe: no current parcel found"
                + (
                    " (is X the northing? VN-2000 northings are the larger number)"
                    if swapped
                    else ""
                ),
                err=True,
            )
        raise typer.Exit(1)


def format_extract(extract: dict[str, Any]) -> str:
    """The text of ``landpipe parcel``."""
    from landpipe.schemas import parcel as canonical

    p = extract["parcel"]
    key = f"{p['commune_code']}/{p['sheet_no']}/{p['parcel_no']}"
    place = ", ".join(
        name for name in (p["commune_name"], p["district_name"], p["province_name"]) if name
    )
    ready = "yes" if extract["ready"] else "no (" + "; ".join(extract["not_ready_because"]) + ")"
    lines = [
        f"parcel {key} (sheet {p['sheet_no']}, parcel {p['parcel_no']}):"
        f" {place or p['commune_code']}",
        f"  area {p['area_m2']} m² on the map (declared {p['declared_area_m2'] or '-'},"
        f" legal {p['legal_area_m2'] or '-'})",
        "  land use "
        + (
            "; ".join(
                f"{code} {name}" if name != code else code
                for code, name in zip(p["land_use_codes"], p["land_use_names"], strict=True)
            )
            or "-"
        ),
        f"  owner {p['owner_name'] or '-'}; address {p['address'] or '-'}",
        f"  current since {p['current_since']} (batch {p['batch_id']}, version {p['version_id']})",
        f"  ready for a certificate: {ready}",
    ]
    for c in extract["certificates"]:
        on = "this version" if c["on_current_version"] else "an earlier version"
        lines.append(f"  certificate {c['serial']} to {c['holder']} on {c['issued_on']} ({on})")
    if extract["findings"]:
        lines.append("  findings in force:")
        lines += [
            f"    {f['rule_code']:<24} {f['severity']:<7} {f['message']} (batch {f['batch_id']}"
            + (", on a record of it that was not loaded)" if f["rejected_record"] else ")")
            for f in extract["findings"]
        ]
    neighbours = [
        (
            f"{n['sheet_no']}/{n['parcel_no']}"
            if n["commune_code"] == p["commune_code"]
            else f"{n['commune_code']}/{n['sheet_no']}/{n['parcel_no']}"
        )
        + f" ({n['shared_m']} m)"
        for n in extract["neighbours"]
    ]
    lines.append(f"  neighbours (sheet/parcel, shared boundary): {', '.join(neighbours) or '-'}")
    for r in extract["rejected"]:
        lines.append(
            f"  a record of this key not loaded: batch {r['batch_id']}, row {r['source_row']}"
            f" ({', '.join(r['rule_codes'])})"
        )
    for n in extract["unloaded_neighbours"]:
        delivered = "/".join(str(n[k]) if n[k] is not None else "?" for k in canonical.KEY)
        lines.append(
            f"  not in the register: a record delivered as {delivered} (batch {n['batch_id']},"
            f" row {n['source_row']}; not loaded: {', '.join(n['rule_codes'])}) shares"
            f" {n['shared_m']} m"
        )
    lines.append("  vertices (VN-2000, metres; X northing, Y easting):")
    lines.append(f"    {'no':>4} {'X':>12} {'Y':>12} {'to next':>9}")
    parts = len({v["part"] for v in extract["vertices"]})
    for v in extract["vertices"]:
        where = [f"part {v['part']}"] if parts > 1 else []
        where += [f"hole {v['ring']}"] if v["ring"] else []
        hole = f"  ({', '.join(where)})" if where else ""
        lines.append(
            f"    {v['vertex_no']:>4} {v['x_m']:>12} {v['y_m']:>12} {v['to_next_m']:>9}{hole}"
        )
    return "\n".join(lines)


@app.command("rules")
def rules_command() -> None:
    """Print the validation rule catalogue."""
    from landpipe import schemas

    for rule in schemas.rules().values():
        typer.echo(f"{rule.code:<24} {rule.severity:<7} {rule.en}")
        typer.echo(f"{'':<32} {rule.vi}")
        for name, value in rule.params.items():
            typer.echo(f"{'':<32} {name} = {value}")


@app.command("sample")
def sample_command(
    out: Annotated[Path, typer.Argument(help="File to write (.shp, .gpkg or .geojson).")],
    parcels: Annotated[int, typer.Option(help="Number of parcels.")] = 2000,
    commune: Annotated[str, typer.Option(help="Commune code.")] = "22924",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 20261127,
    faults: Annotated[bool, typer.Option(help="Inject the realistic faults.")] = True,
) -> None:
    """Write a synthetic survey delivery (the sample delivery by default).

    Exits 2 on a wrong argument: a commune the generator cannot place inside its district,
    no parcel, or a file type it does not write.
    """
    from pyogrio.errors import DataLayerError, DataSourceError

    from landpipe import synth

    placeable = synth.placeable_communes()
    if commune not in placeable:
        typer.echo(
            f"landpipe: --commune {commune!r}: the sample generator places only these communes"
            f" inside their district: {', '.join(placeable)}",
            err=True,
        )
        raise typer.Exit(2)
    try:
        frame = synth.generate_delivery(commune, n_parcels=parcels, seed=seed, faults=faults)
        out.parent.mkdir(parents=True, exist_ok=True)
        written = synth.write_delivery(frame, out)
    except ValueError as error:
        typer.echo(f"landpipe: {error}", err=True)
        raise typer.Exit(2) from None
    except OSError as error:
        typer.echo(f"landpipe: cannot write {out}: {error.strerror or error}", err=True)
        raise typer.Exit(3) from None
    except (DataLayerError, DataSourceError) as error:
        # GDAL cannot create the file there (/proc, a read-only share).
        typer.echo(f"landpipe: cannot write {out}: {error}", err=True)
        raise typer.Exit(3) from None
    typer.echo(f"wrote {len(frame)} parcels to {written}")


@db_app.command("start")
def db_start() -> None:
    """Start the embedded PostGIS cluster (created on first use)."""
    from landpipe import cluster

    settings = _settings()
    if settings.database_url:
        typer.echo("LANDPIPE_DATABASE_URL is set: there is no embedded cluster to start")
        return
    try:
        embedded = cluster.cluster_for(settings.home, settings.pg_bindir)
        started = cluster.start(embedded)
    except LandpipeError as error:
        _fail(error)
    typer.echo(f"{'started' if started else 'already running'}: {embedded.data_dir}")


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded PostGIS cluster, and landpipe's local Prefect server if it runs."""
    from landpipe import cluster, prefect_server

    settings = _settings()
    try:  # first: whatever becomes of the cluster
        prefect_stopped = prefect_server.stop(_prefect_home(settings))
    except OSError as error:
        typer.echo(f"landpipe: cannot stop the local Prefect server: {error}", err=True)
        prefect_stopped = False
    try:
        embedded = cluster.cluster_for(settings.home, settings.pg_bindir)
        stopped = cluster.stop(embedded)
    except LandpipeError as error:
        if prefect_stopped:
            typer.echo("local Prefect server: stopped")
        _fail(error)
    typer.echo("stopped" if stopped else "not running")
    if prefect_stopped:
        typer.echo("local Prefect server: stopped")


@db_app.command("status")
def db_status() -> None:
    """Say whether the database is running, and where."""
    from landpipe import cluster

    settings = _settings()
    if settings.database_url:
        from landpipe.db import make_engine

        try:
            make_engine(settings).dispose()
        except LandpipeError as error:
            _fail(error)
        typer.echo("configured (LANDPIPE_DATABASE_URL): reachable")
        _prefect_status(settings)
        return
    try:
        embedded = cluster.cluster_for(settings.home, settings.pg_bindir)
    except LandpipeError as error:
        _fail(error)
    state = cluster.status(embedded)
    typer.echo(f"embedded: {state} ({embedded.data_dir})")
    _prefect_status(settings)
    if state != "running":
        raise typer.Exit(1)


def _prefect_status(settings: Settings) -> None:
    """A line on landpipe's local Prefect server, when it runs."""
    from landpipe import prefect_server

    url = prefect_server.running(_prefect_home(settings))
    if url is not None:
        typer.echo(f"local Prefect server: running, UI at {url.removesuffix('/api')}")


@db_app.command("url")
def db_url() -> None:
    """Print the SQLAlchemy URL in use (last line), starting the embedded cluster if needed."""
    from landpipe.db import database_url

    try:
        typer.echo(database_url(_settings()))
    except LandpipeError as error:
        _fail(error)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or upgrade the land register schema and reload the reference data."""
    from landpipe.db import make_engine
    from landpipe.migrate import upgrade

    try:
        engine = make_engine(_settings())
        applied = upgrade(engine)
        engine.dispose()
    except LandpipeError as error:
        _fail(error)
    typer.echo(f"database is current ({len(applied)} SQL files applied, reference data reloaded)")


@app.command("revalidate")
def revalidate_command(
    commune: Annotated[
        list[str] | None,
        typer.Option(
            "--commune",
            help="Commune code (5 digits) to revalidate; repeat for several. "
            "Default: every commune with parcels in the register.",
        ),
    ] = None,
    dask_address: Annotated[
        str | None,
        typer.Option(
            "--dask-address",
            help="Dask scheduler to run on (tcp://host:8786). Default: $LANDPIPE_DASK_ADDRESS, "
            "else worker processes on this machine, one per core.",
        ),
    ] = None,
    as_json: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Re-run the rule catalogue over the current parcels and refresh their findings.

    Parcels are not reloaded. Per commune, earlier findings of the rules re-run are closed
    and the new ones recorded (a batch of kind 'revalidation'); CERT_CHANGED findings and
    those made while reading a delivery stay open. Exit 0 when every commune was revalidated.
    """
    _check_commune_codes(commune or [])
    host = r"(?:\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+)"  # a name, IPv4, or [IPv6]
    if dask_address is not None and not re.fullmatch(rf"(?:[a-z]+://)?{host}:[0-9]+", dask_address):
        typer.echo(
            f"landpipe: --dask-address {dask_address!r} is no scheduler address (tcp://host:8786)",
            err=True,
        )
        raise typer.Exit(2)
    from landpipe import schemas

    for code in commune or []:  # a typo would revalidate nothing and say so as a success
        if code not in schemas.commune_codes():
            typer.echo(f"landpipe: --commune {code} is not a commune of the province", err=True)
            raise typer.Exit(2)
    settings = _settings()
    prepare_prefect(settings, verbose=verbose)
    from landpipe.flows.revalidate import revalidate

    try:
        state = _run_flow(revalidate, communes=commune or None, dask_address=dask_address)
    except LandpipeError as error:
        _fail(error)
    summary = _flow_summary(state, "revalidation")
    if as_json:
        typer.echo(json.dumps(summary, ensure_ascii=False))
    else:
        typer.echo(format_revalidation(summary))
    if state.is_failed():
        typer.echo(f"landpipe: {state.message}", err=True)
        raise typer.Exit(1)


def format_revalidation(summary: dict[str, Any]) -> str:
    """The human summary of a revalidation: one block per commune."""
    results = summary["communes"]
    lines = [f"revalidated {len(results)} communes ({summary['runner']})"]
    for result in results:
        if result["status"] == "error":
            lines.append(f"  {result['commune_code']}: not revalidated: {result['error']}")
            continue
        if result["status"] == "empty":
            lines.append(f"  {result['commune_code']}: no current parcels")
            continue
        findings = ", ".join(f"{code} {n}" for code, n in result["findings"].items()) or "none"
        lines.append(
            f"  {result['commune_code']} (batch {result['batch']}): {result['parcels']} parcels;"
            f" findings: {findings}; {result['closed']} earlier findings closed;"
            f" {result['blocked']} blocked, {result['ready']} ready for a certificate"
        )
    return "\n".join(lines)


@app.command("inbox")
def inbox_command(
    folder: Annotated[
        Path,
        typer.Argument(
            help="The inbox folder: deliveries in it are loaded, then moved with their "
            "report into its archive/ or failed/ folder.",
            exists=True,
            file_okay=False,
        ),
    ],
    quiet_seconds: Annotated[
        float,
        typer.Option(
            help="Leave deliveries changed less than this many seconds ago (still "
            "being copied in) for the next run."
        ),
    ] = 60,
    as_json: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Process an inbox folder once, now (the flow the scheduled-inbox deployment runs).

    Exit 0 when every delivery was processed, refused ones included (they are in failed/);
    4 when the database could not be reached for some (they stay in the inbox), 1 otherwise.
    """
    settings = _settings()
    prepare_prefect(settings, verbose=verbose)
    from landpipe.flows.inbox import scheduled_inbox

    try:
        state = _run_flow(scheduled_inbox, inbox=str(folder), quiet_seconds=quiet_seconds)
    except LandpipeError as error:
        _fail(error)
    summary = _flow_summary(state, f"inbox {folder}")
    if as_json:
        typer.echo(json.dumps(summary, ensure_ascii=False))
    else:
        typer.echo(format_inbox(summary))
    if state.is_failed():
        typer.echo(f"landpipe: {state.message}", err=True)
        raise typer.Exit(4 if summary["counts"].get("deferred") else 1)


def format_inbox(summary: dict[str, Any]) -> str:
    """The human summary of an inbox run: one line per delivery, and where it went."""
    lines = [f"inbox {summary['inbox']}: {len(summary['deliveries'])} deliveries"]
    for outcome in summary["deliveries"]:
        batch = f"batch {outcome['batch']}" if outcome.get("batch") is not None else "no batch"
        line = f"  {outcome['delivery']}: {outcome['status']} ({batch})"
        if outcome.get("moved_to"):
            line += f" -> {Path(outcome['moved_to']).parent}"
        if outcome.get("error"):
            line += f"\n    {outcome['error']}"
        if outcome.get("report"):
            line += f"\n    report: {outcome['report']['html']}"
        lines.append(line)
    for name in summary.get("arriving", []):
        lines.append(f"  {name}: still being copied in, left for the next run")
    for name in summary.get("ignored", []):
        lines.append(f"  {name}: not a delivery, left in the inbox")
    for name in summary.get("misnamed", []):
        lines.append(
            f"  {name}: its name is not UTF-8 (TCVN3, VNI or Windows-1258?), left in the inbox:"
            " rename it"
        )
    for entry in summary.get("unreadable", []):
        lines.append(f"  {entry}; left in the inbox")
    return "\n".join(lines)


def main() -> None:
    """Entry point of the ``landpipe`` command."""
    from landpipe.undecodable import as_bytes, not_utf8

    # Neither the register, Prefect's parameters nor a search can carry such an argument.
    for argument in filter(not_utf8, sys.argv[1:]):
        typer.echo(
            f"landpipe: the argument '{as_bytes(argument)}' is not UTF-8 (a name or text in"
            " TCVN3, VNI or Windows-1258?): rename the file or folder, or type the text in UTF-8",
            err=True,
        )
        sys.exit(2)
    try:
        app()
    except LandpipeError as error:  # pragma: no cover - commands map their own errors
        typer.echo(f"landpipe: {error}", err=True)
        sys.exit(exit_code(error))
