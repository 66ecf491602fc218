"""landpipe as a DONRE service: the deployments of prefect.yaml on a real Prefect worker, the
scheduled inbox, revalidation (locally and on a Dask cluster), with a real PostGIS."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from landpipe import schemas, synth
from landpipe.errors import ConfigError
from landpipe.inbox import ARCHIVE, FAILED, inbox_lock, move_delivery, scan_inbox
from landpipe.revalidate import KEPT_RULES, RECHECKED_RULES, revalidate_commune
from landpipe.sources.files import fingerprint
from tests.conftest import REPO, run_cli
from tests.delivery_files import pipes
from tests.parcels import BOW_TIE, record
from tests.test_load import load_file, write

pytestmark = pytest.mark.slow

#: Two communes that synth places inside their own district, neither the demo's 22924.
COMMUNES = [code for code in synth.placeable_communes() if code != "22924"][:2]
N_PARCELS = 200
#: Records of a generated delivery that its injected faults get rejected.
N_REJECTED = 7


def rows(engine: sa.Engine, sql: str, **params) -> list[tuple]:
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(sa.text(sql), params)]


def scalar(engine: sa.Engine, sql: str, **params):
    with engine.connect() as connection:
        return connection.execute(sa.text(sql), params).scalar()


def _prefect(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [str(Path(sys.executable).with_name("prefect")), *args]
    result = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"prefect {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def worker(settings, prefect_api, tmp_path_factory) -> Iterator[dict[str, str]]:
    """prefect.yaml deployed to the session's Prefect server, and a `process` worker on the
    `landpipe` pool whose environment points at the test database, as the README says."""
    home = tmp_path_factory.mktemp("prefect-cli")
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_api,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "LANDPIPE_DATABASE_URL": settings.database_url,
        "LANDPIPE_HOME": str(settings.home),
        # `prefect deploy` renders these into the deployments: the folder the worker runs the
        # flows from, and the scheduled run's inbox (an empty one: a test run names its own).
        "PWD": str(REPO),
        "LANDPIPE_INBOX": str(tmp_path_factory.mktemp("scheduled-inbox")),
    }
    _prefect("work-pool", "create", "landpipe", "--type", "process", "--overwrite", env=env)
    _prefect("--no-prompt", "deploy", "--all", env=env)
    log_path = home / "worker.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("prefect")),
                "worker",
                "start",
                "--pool",
                "landpipe",
            ],
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield {**env, "WORKER_LOG": str(log_path)}
    finally:
        process.send_signal(signal.SIGINT)  # as Ctrl-C: the worker shuts down cleanly
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=20)


def run_deployment_and_wait(name: str, worker: dict[str, str], **parameters):
    from prefect.deployments import run_deployment

    flow_run = run_deployment(name, parameters=parameters, timeout=300, poll_interval=1)
    log = Path(worker["WORKER_LOG"]).read_text()
    assert flow_run.state is not None and flow_run.state.is_final(), log[-3000:]
    return flow_run, log


def _three_deliveries(inbox: Path) -> None:
    """A Shapefile of one commune, a truncated Shapefile, a zipped Shapefile of another."""
    first, second = COMMUNES
    synth.write_delivery(
        synth.generate_delivery(first, n_parcels=N_PARCELS), inbox / f"a_thua_dat_{first}.shp"
    )
    broken = inbox / "b_broken.shp"
    synth.write_delivery(synth.generate_delivery(first, n_parcels=40, faults=False), broken)
    with broken.open("r+b") as handle:
        handle.truncate(broken.stat().st_size // 2)
    staging = inbox.parent / "staging"
    shp = synth.write_delivery(
        synth.generate_delivery(second, n_parcels=N_PARCELS), staging / f"thua_dat_{second}.shp"
    )
    with zipfile.ZipFile(inbox / f"c_giao_nop_{second}.zip", "w") as bundle:
        for part in sorted(staging.glob(shp.stem + ".*")):
            bundle.write(part, f"giao_nop/{part.name}")
    (inbox / "doc_truoc.txt").write_text("Ghi chú của kỹ thuật viên\n", encoding="utf-8")


def _filed(inbox: Path, where: str) -> dict[str, list[str]]:
    return {
        folder.name: sorted(p.name for p in folder.iterdir())
        for folder in sorted((inbox / where).iterdir())
    }


def test_scheduled_inbox_on_a_worker_loads_files_and_never_loads_twice(register, worker, tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    _three_deliveries(inbox)
    first, second = COMMUNES

    flow_run, log = run_deployment_and_wait(
        "scheduled_inbox/scheduled-inbox", worker, inbox=str(inbox), quiet_seconds=0
    )
    assert flow_run.state.is_completed(), log[-3000:]
    assert flow_run.state.message == "3 deliveries: 1 failed, 2 loaded"

    # Deliveries are processed side by side: batch ids follow no order, the names do.
    batches = rows(
        register,
        "SELECT id, status, commune_code, source_path FROM land.batch"
        " ORDER BY regexp_replace(source_path, '^.*/', '')",
    )
    assert [(b[1], b[2]) for b in batches] == [
        ("loaded", first),
        ("failed", None),
        ("loaded", second),
    ]
    assert Path(batches[1][3]).name == "b_broken.shp"
    per_commune = dict(
        rows(register, "SELECT commune_code, count(*) FROM land.parcel GROUP BY 1 ORDER BY 1")
    )
    assert per_commune == {first: N_PARCELS - N_REJECTED, second: N_PARCELS - N_REJECTED}

    # Each delivery, every file of it, in a folder of its own with its report beside it.
    archived = _filed(inbox, ARCHIVE)
    failed = _filed(inbox, FAILED)
    assert len(archived) == 2 and len(failed) == 1
    # Folders are named <date>_batch<id>_<delivery>; ids follow no order, the names do.
    shp_folder, zip_folder = sorted(archived, key=lambda name: name.split("_", 2)[2])
    assert shp_folder.endswith(f"_batch{batches[0][0]}_a_thua_dat_{first}")
    stem = f"a_thua_dat_{first}"
    assert archived[shp_folder] == sorted(
        [f"{stem}.{ext}" for ext in ("cpg", "dbf", "prj", "shp", "shx")]
        + [f"{stem}.shp.batch-{batches[0][0]}.report.html"]
        + [f"{stem}.shp.batch-{batches[0][0]}.findings.gpkg"]
    )
    assert archived[zip_folder] == sorted(
        [f"c_giao_nop_{second}.zip"]
        + [
            f"c_giao_nop_{second}.zip.batch-{batches[2][0]}.{kind}"
            for kind in ("report.html", "findings.gpkg")
        ]
    )
    (failed_folder,) = failed
    assert failed_folder.endswith(f"_batch{batches[1][0]}_b_broken")
    assert {"b_broken.shp", "b_broken.shx", "b_broken.dbf"} <= set(failed[failed_folder])
    report = inbox / FAILED / failed_folder / f"b_broken.shp.batch-{batches[1][0]}.report.html"
    assert "truncated" in report.read_text(encoding="utf-8")
    # The inbox keeps only what is no delivery.
    assert sorted(p.name for p in inbox.iterdir() if not p.name.startswith(".")) == [
        ARCHIVE,
        "doc_truoc.txt",
        FAILED,
    ]
    # Run and task names say which delivery and which step.
    for name in (
        f"load a_thua_dat_{first}.shp",
        f"read c_giao_nop_{second}.zip",
        "move to failed b_broken.shp",
        f"archive a_thua_dat_{first}.shp",
    ):
        assert f"'{name}'" in log, name

    # A crash after loading but before filing away: the deliveries are back in the inbox.
    for folder, names in archived.items():
        for name in names:
            if ".batch-" not in name:
                shutil.copy2(inbox / ARCHIVE / folder / name, inbox / name)
    before = rows(register, "SELECT count(*), max(id) FROM land.batch")
    parcels_before = scalar(register, "SELECT count(*) FROM land.parcel_version")
    flow_run, log = run_deployment_and_wait(
        "scheduled_inbox/scheduled-inbox", worker, inbox=str(inbox), quiet_seconds=0
    )
    assert flow_run.state.is_completed(), log[-3000:]
    assert flow_run.state.message == "2 deliveries: 2 loaded before"
    assert rows(register, "SELECT count(*), max(id) FROM land.batch") == before
    assert scalar(register, "SELECT count(*) FROM land.parcel_version") == parcels_before
    assert len(_filed(inbox, ARCHIVE)) == 4

    # On demand, from the command line: a file still being copied in is left alone.
    arriving = inbox / "d_dang_chep.geojson"
    arriving.write_text('{"type": "FeatureCollection", "features": [')
    # A folder named on an office PC in TCVN3 ("thửa" as its bytes): said, and left alone.
    misnamed = inbox / os.fsdecode(b"th\xfea_dat")
    shutil.copytree(inbox / ARCHIVE / next(iter(archived)), misnamed)
    old = time.time() - 3600
    os.utime(misnamed, (old, old))
    # A shortcut to a share that is not mounted: said, and left alone.
    (inbox / "loi_tat.gpkg").symlink_to(tmp_path / "unmounted" / "thua_dat.gpkg")
    result = run_cli("inbox", str(inbox), env=worker)
    assert result.returncode == 0, result.stderr
    assert "d_dang_chep.geojson: still being copied in" in result.stdout
    assert (
        "  loi_tat.gpkg: a link to something that is not there; left in the inbox"
        in result.stdout.splitlines()
    )
    assert (
        "  th\\xfea_dat: its name is not UTF-8 (TCVN3, VNI or Windows-1258?), left in the"
        " inbox: rename it"
    ) in result.stdout.splitlines()
    assert arriving.exists() and misnamed.is_dir()
    assert rows(register, "SELECT count(*), max(id) FROM land.batch") == before


def test_scan_groups_shapefile_sidecars_and_leaves_the_rest(tmp_path):
    inbox = tmp_path / "inbox"
    frame = synth.generate_delivery("22924", n_parcels=40, faults=False)
    synth.write_delivery(frame, inbox / "thua_dat.shp")
    (inbox / "thua_dat.shp.xml").write_text("<metadata/>")
    (inbox / "thua_dat.qix").write_bytes(b"\0")
    synth.write_delivery(frame, inbox / "folder_delivery" / "to_1.shp")
    (inbox / "orphan.dbf").write_bytes(b"\0")
    # A report written beside a delivery loaded from the inbox by hand: its findings layer has
    # parcel keys, and loaded as a delivery it would retire the parcels it does not name.
    synth.write_delivery(frame, inbox / "giao_truoc.shp.batch-3.findings.gpkg")
    (inbox / "giao_truoc.shp.batch-3.report.html").write_text("<html></html>")
    (inbox / ".hidden.gpkg").write_bytes(b"\0")
    (inbox / ARCHIVE).mkdir()
    # Names in TCVN3: one in the inbox is left until renamed; one inside a folder delivery
    # makes a delivery that its load refuses (filed in failed/), not a scan that fails.
    (inbox / os.fsdecode(b"x\xe0.gpkg")).write_bytes(b"\0")
    (inbox / "giao_nop").mkdir()
    (inbox / "giao_nop" / os.fsdecode(b"th\xfea.gpkg")).write_bytes(b"\0")
    # Empty, a copy that failed: every empty file has the same content as any other.
    (inbox / "zero.geojson").write_bytes(b"")
    (inbox / "trong").mkdir()
    old = time.time() - 3600
    for path in inbox.rglob("*"):
        os.utime(path, (old, old))
    synth.write_delivery(frame, inbox / "fresh.gpkg")  # being copied in now
    # What cannot be read is said and left, and the rest goes on: a shortcut to a share that
    # is not mounted, a pipe (reading it would wait forever), a Shapefile with a pipe as part.
    (inbox / "loi_tat.gpkg").symlink_to(tmp_path / "unmounted" / "thua_dat.gpkg")
    synth.write_delivery(frame, inbox / "to_2.shp")
    (inbox / "to_2.shx").unlink()
    for path in inbox.glob("to_2.*"):
        os.utime(path, (old, old))

    with pipes(inbox / "dang_ghi.gpkg", inbox / "to_2.shx"):
        scan = scan_inbox(inbox, quiet_seconds=60)
    assert [d.name for d in scan.deliveries] == ["folder_delivery", "giao_nop", "thua_dat.shp"]
    assert scan.arriving == ["fresh.gpkg"]
    assert scan.ignored == [
        "giao_truoc.shp.batch-3.findings.gpkg",
        "giao_truoc.shp.batch-3.report.html",
        "orphan.dbf",
    ]
    assert scan.misnamed == ["x\\xe0.gpkg"]
    assert scan.unreadable == [
        "dang_ghi.gpkg: not a file or a folder (a pipe, a socket or a device)",
        "loi_tat.gpkg: a link to something that is not there",
        "to_2.shp: to_2.shx is not a file or a folder (a pipe, a socket or a device)",
        "to_2.shx: not a file or a folder (a pipe, a socket or a device)",
        "trong: empty (a copy that failed?)",
        "zero.geojson: empty (a copy that failed?)",
    ]
    shapefile = scan.deliveries[2]
    assert [p.name for p in shapefile.parts] == [
        "thua_dat.shp",
        "thua_dat.cpg",
        "thua_dat.dbf",
        "thua_dat.prj",
        "thua_dat.qix",
        "thua_dat.shp.xml",
        "thua_dat.shx",
    ]
    assert shapefile.sha256 == fingerprint(inbox / "thua_dat.shp")
    moved = move_delivery(shapefile, inbox / ARCHIVE / "x")
    assert moved == inbox / ARCHIVE / "x" / "thua_dat.shp"
    assert len(list((inbox / ARCHIVE / "x").iterdir())) == 7
    assert not list(inbox.glob("thua_dat*"))
    assert [d.name for d in scan_inbox(inbox, quiet_seconds=0).deliveries] == [
        "folder_delivery",
        "fresh.gpkg",
        "giao_nop",
    ]
    # One run at a time per inbox.
    with inbox_lock(inbox), pytest.raises(ConfigError, match="another run"), inbox_lock(inbox):
        pass


def test_every_rule_is_rechecked_or_kept_by_a_revalidation():
    assert set(schemas.rules()) == RECHECKED_RULES | KEPT_RULES
    assert not RECHECKED_RULES & KEPT_RULES
    assert "CERT_CHANGED" in KEPT_RULES


def test_load_writes_the_report_beside_the_delivery(register, cli_env, tmp_path):
    path = write(tmp_path, [record(i) for i in range(3)], "d.gpkg")
    result = run_cli("load", str(path), "--json", env=cli_env)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    html = Path(summary["report"]["html"])
    assert html.parent == tmp_path and html.name == f"d.gpkg.batch-{summary['batch']}.report.html"
    assert html.exists() and Path(summary["report"]["gpkg"]).exists()


def test_a_revalidation_uses_the_map_scale_the_load_was_given(register, cli_env, tmp_path):
    # 1.5 m² more than drawn: beyond the 1 m² tolerance of 1:200, within the lenient one of
    # an unknown scale.
    path = write(tmp_path, [record(0, DienTich=101.5), record(1)], "d.gpkg")
    result = run_cli("load", str(path), "--json", "--scale", "200", "--no-report", env=cli_env)
    assert result.returncode == 0, result.stderr
    batch = json.loads(result.stdout)["batch"]
    assert json.loads(result.stdout)["issues"] == {"ATTR_AREA_MISMATCH": 1}
    options = scalar(register, "SELECT options FROM land.batch WHERE id = :b", b=batch)
    assert options["scale"] == 200
    again = revalidate_commune(register, "22924")
    assert rows(
        register,
        "SELECT rule_code, parcel_no FROM land.finding WHERE batch_id = :b",
        b=again.batch,
    ) == [("ATTR_AREA_MISMATCH", 1)]


# --------------------------------------------------------------------------- revalidation


def _open_findings(engine: sa.Engine, commune: str) -> set[tuple[str, int | None]]:
    return set(
        rows(
            engine,
            "SELECT rule_code, parcel_no FROM land.finding"
            " WHERE commune_code = :c AND closed_by_batch_id IS NULL",
            c=commune,
        )
    )


def _parcels(engine: sa.Engine, sql: str) -> set[int]:
    return {row[0] for row in rows(engine, sql)}


def test_revalidation_refreshes_findings_and_keeps_cert_changed(register, cli_env, tmp_path):
    records = [record(i) for i in range(6)]
    records[1]["KyHieuMucDichSuDung"] = "ODX"  # unknown land use: block
    records[2]["DienTich"] = 130.0  # area mismatch: block
    records[3]["KyHieuMucDichSuDung"] = synth.LEGACY_LAND_USE_CODE  # old-list code: warn
    load_file(register, write(tmp_path, records, "d1.gpkg"))
    with register.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO land.certificate (serial, commune_code, sheet_no, parcel_no,"
                " parcel_version_id, holder, issued_on)"
                " SELECT 'CS 000001', commune_code, sheet_no, parcel_no, id, owner_name,"
                " '2026-05-01' FROM land.parcel WHERE parcel_no = 1"
            )
        )
    records[0]["TenChu"] = "Lê Thị Hoa"  # the certified parcel changes: CERT_CHANGED
    load_file(register, write(tmp_path, records, "d2.gpkg"))
    assert _parcels(register, "SELECT parcel_no FROM land.parcel_ready") == {4, 5, 6}

    # The register is corrected and damaged by hand: parcel 2's land use fixed, parcel 4's
    # shell crossed into a bow tie, parcel 5's declared area wrong, parcel 6 moved 2 m onto
    # parcel 5.
    edits = {
        2: "land_use_codes = '{ODT}'",
        4: "geom = ST_Multi(ST_Translate(ST_GeomFromText(:bow_tie, 9218), 30, 0))",
        5: "declared_area_m2 = 150",
        6: "geom = ST_Translate(geom, -2, 0)",
    }
    with register.begin() as connection:
        for parcel_no, change in edits.items():
            connection.execute(
                sa.text(
                    f"UPDATE land.parcel_version SET {change}"
                    " WHERE valid_to IS NULL AND parcel_no = :n"
                ),
                {"n": parcel_no, "bow_tie": BOW_TIE.wkt},
            )
    result = run_cli("revalidate", "--commune", "22924", "--json", env=cli_env)
    assert result.returncode == 0, result.stderr
    (summary,) = json.loads(result.stdout)["communes"]
    assert (summary["status"], summary["parcels"]) == ("revalidated", 6)
    revalidation = summary["batch"]
    assert rows(
        register, "SELECT kind, status, n_read FROM land.batch WHERE id = :b", b=revalidation
    ) == [("revalidation", "revalidated", 6)]
    found = set(
        rows(
            register,
            "SELECT rule_code, parcel_no FROM land.finding WHERE batch_id = :b",
            b=revalidation,
        )
    )
    assert found >= {
        ("GEOM_INVALID", 4),
        ("ATTR_AREA_MISMATCH", 3),
        ("ATTR_AREA_MISMATCH", 5),
        ("ATTR_LAND_USE_LEGACY", 4),
        ("TOPO_OVERLAP", 5),
    }
    assert not {rule for rule, _ in found} - {
        "GEOM_INVALID",
        "ATTR_AREA_MISMATCH",
        "ATTR_LAND_USE_LEGACY",
        "TOPO_OVERLAP",
        "TOPO_EDGE_MISMATCH",
    }
    # In force now: the revalidation's findings, and CERT_CHANGED, which waits for review.
    assert _open_findings(register, "22924") == found | {("CERT_CHANGED", 1)}
    closed = rows(
        register,
        "SELECT DISTINCT closed_by_batch_id FROM land.finding"
        " WHERE batch_id < :b AND rule_code <> 'CERT_CHANGED'",
        b=revalidation,
    )
    assert closed == [(revalidation,)]
    assert summary["closed"] == scalar(
        register, "SELECT count(*) FROM land.finding WHERE closed_by_batch_id = :b", b=revalidation
    )
    blocked = _parcels(register, "SELECT parcel_no FROM land.parcel_detail WHERE blocked")
    # A reject rule that a registered parcel now breaks blocks it: it stays in the register.
    assert blocked == {1, 3, 4, 5, 6}
    ready = _parcels(register, "SELECT parcel_no FROM land.parcel_ready")
    assert ready == {2}
    assert (summary["blocked"], summary["ready"]) == (5, 1)

    # Again: the same findings in force, the first revalidation's closed by the second.
    again = revalidate_commune(register, "22924")
    assert again.closed == len(found)
    assert (
        set(
            rows(
                register,
                "SELECT rule_code, parcel_no FROM land.finding WHERE batch_id = :b",
                b=again.batch,
            )
        )
        == found
    )
    assert _open_findings(register, "22924") == found | {("CERT_CHANGED", 1)}
    assert _parcels(register, "SELECT parcel_no FROM land.parcel_ready") == ready
    # Its report reads no delivery and says why it closed the first one's findings.
    out = tmp_path / "reports"
    report = run_cli("report", str(again.batch), "--out", str(out), env=cli_env)
    assert report.returncode == 0, report.stderr
    page = (out / f"batch-{again.batch}.report.html").read_text()
    assert f"<h2>Findings of earlier batches closed ({len(found)})</h2>" in page
    assert "This revalidation ran their rules again" in page
    assert "<dt>Delivery</dt>" not in page and "<dt>Commune</dt>" in page


_SNAPSHOT = """
SELECT f.rule_code, f.severity, f.commune_code, f.sheet_no, f.parcel_no, f.other_commune_code,
       f.other_sheet_no, f.other_parcel_no, f.message, f.detail::text, f.area_m2,
       ST_AsText(f.location)
FROM land.finding f JOIN land.batch b ON b.id = f.batch_id
WHERE b.kind = 'revalidation' AND f.closed_by_batch_id IS NULL
"""


def test_dask_cluster_gives_the_findings_of_local_processes(
    register, settings, cli_env, tmp_path, monkeypatch
):
    from distributed import LocalCluster

    for code in COMMUNES:
        load_file(
            register,
            synth.write_delivery(
                synth.generate_delivery(code, n_parcels=N_PARCELS), tmp_path / f"{code}.shp"
            ),
        )
    # A parcel moved 30 cm: overlaps and unmatched edges to find.
    with register.begin() as connection:
        connection.execute(
            sa.text(
                "UPDATE land.parcel_version SET geom = ST_Translate(geom, 0.3, 0)"
                " WHERE valid_to IS NULL AND commune_code = :c AND sheet_no = 1"
                " AND parcel_no = 40"
            ),
            {"c": COMMUNES[0]},
        )
    cli_env.pop("LANDPIPE_DASK_ADDRESS", None)

    local = run_cli("revalidate", "--json", env=cli_env)
    assert local.returncode == 0, local.stderr
    assert json.loads(local.stdout)["runner"] == "local processes"
    expected = sorted(rows(register, _SNAPSHOT))
    assert {row[0] for row in expected} >= {
        "TOPO_OVERLAP",
        "TOPO_EDGE_MISMATCH",
        "ATTR_AREA_MISMATCH",
    }
    blocked = _parcels(register, "SELECT id FROM land.parcel_detail WHERE blocked")

    # The cluster's worker processes report their task runs to the same Prefect server.
    monkeypatch.setenv("PREFECT_API_URL", cli_env["PREFECT_API_URL"])
    with LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
    ) as cluster:
        address = cluster.scheduler_address
        on_dask = run_cli("revalidate", "--dask-address", address, "--json", env=cli_env)
    assert on_dask.returncode == 0, on_dask.stderr
    summary = json.loads(on_dask.stdout)
    assert summary["runner"] == f"Dask at {address}"
    assert sorted(r["commune_code"] for r in summary["communes"]) == sorted(COMMUNES)
    assert sorted(rows(register, _SNAPSHOT)) == expected
    assert _parcels(register, "SELECT id FROM land.parcel_detail WHERE blocked") == blocked
    # The Dask run closed every finding of the local one.
    in_force = (
        "SELECT count(*) FROM land.finding f JOIN land.batch b ON b.id = f.batch_id"
        " WHERE b.kind = 'revalidation' AND f.closed_by_batch_id IS NULL"
    )
    assert scalar(register, in_force) == len(expected)


def test_the_revalidate_flow_refuses_a_commune_code_it_cannot_revalidate(prefect_api):
    """Run from its deployment, a typo revalidated nothing and reported success."""
    from landpipe.flows.revalidate import revalidate

    with pytest.raises(ConfigError, match="not communes of the province: 99999"):
        revalidate(communes=["22924", "99999"])
    with pytest.raises(ConfigError, match="not 5-digit commune codes: ２２９２４"):
        revalidate(communes=["２２９２４"])
