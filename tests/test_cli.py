"""``landpipe load`` end to end: the CLI, the Prefect flow on a real server, a real PostGIS."""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from shapely.geometry import Polygon, box

from landpipe import synth
from tests.conftest import run_cli
from tests.parcels import X0, Y0, delivery, record
from tests.test_load import rows, table_counts, write

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    """The demo's sample delivery: a ward of Phan Thiết as a ViLIS Shapefile."""
    path = tmp_path_factory.mktemp("sample") / "thua_dat_22924.shp"
    synth.write_delivery(synth.generate_delivery("22924"), path)
    return path


def load_json(path: Path, env, *options: str) -> tuple[dict, object]:
    result = run_cli("load", str(path), "--json", *options, env=env)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout + result.stderr
    return json.loads(lines[0]), result


def test_sample_delivery_loads_end_to_end(register, cli_env, sample):
    summary, result = load_json(sample, cli_env)
    assert result.returncode == 0, result.stderr
    assert set(summary) >= {"batch", "status", "parcels", "issues"}
    assert set(summary["parcels"]) == {"read", "loaded", "repaired", "rejected"}
    assert summary["changes"] == {
        "added": summary["parcels"]["loaded"],
        "changed": 0,
        "unchanged": 0,
        "retired": 0,
    }
    counts = summary["parcels"]
    assert summary["status"] == "loaded"
    assert counts["read"] == len(synth.generate_delivery("22924"))
    assert counts["loaded"] + counts["rejected"] == counts["read"]
    assert counts["repaired"] == 1
    expected = {}
    for fault in synth.FAULTS:
        expected[fault.rule_code] = expected.get(fault.rule_code, 0) + 1
    assert summary["issues"] == expected
    with register.connect() as connection:
        assert (
            connection.execute(sa.text("SELECT count(*) FROM land.parcel")).scalar()
            == counts["loaded"]
        )
        assert (
            connection.execute(sa.text("SELECT count(*) FROM land.rejected_record")).scalar()
            == counts["rejected"]
        )
        sheets = connection.execute(
            sa.text("SELECT count(DISTINCT sheet_no) FROM land.parcel")
        ).scalar()
        assert sheets >= 2
        # Vietnamese text survives the Shapefile, the flow and the database unchanged.
        owner = connection.execute(
            sa.text("SELECT owner_name FROM land.parcel WHERE owner_name LIKE 'Nguyễn%' LIMIT 1")
        ).scalar()
        assert owner and owner.startswith("Nguyễn")

    # The same delivery again: unchanged, nothing written.
    before = table_counts(register)
    again, result = load_json(sample, cli_env)
    assert result.returncode == 0
    assert (again["status"], again["batch"]) == ("unchanged", summary["batch"])
    assert table_counts(register) == before


def test_human_summary(register, cli_env, sample):
    result = run_cli("load", str(sample), env=cli_env)
    assert result.returncode == 0, result.stderr
    assert "loaded" in result.stdout and "GEOM_INVALID" in result.stdout
    assert result.stderr == ""


def _no_crs_far_away(tmp_path: Path) -> Path:
    path = tmp_path / "far.shp"
    frame = delivery([record(i) for i in range(3)], crs=None)
    frame = frame.set_geometry(frame.geometry.translate(2_000_000, 3_000_000))
    frame.to_file(path)
    assert not path.with_suffix(".prj").exists()
    return path


def _empty_layer(tmp_path: Path) -> Path:
    path = tmp_path / "empty.gpkg"
    delivery([record(0)]).iloc[:0].to_file(path)
    return path


def _not_what_its_name_says(tmp_path: Path) -> Path:
    path = tmp_path / "thua_dat.gpkg"
    path.write_text("MaXa,SoTo,SoThua\n22924,1,1\n")
    return path


def _truncated_shapefile(tmp_path: Path) -> Path:
    path = tmp_path / "truncated.shp"
    delivery([record(i) for i in range(20)]).to_file(path)
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.truncate(size // 2)
    return path


def _truncated_geopackage(tmp_path: Path) -> Path:
    path = tmp_path / "truncated.gpkg"
    delivery([record(i) for i in range(200)]).to_file(path)
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.truncate(size * 8 // 10)
    return path


def _wrong_crs(tmp_path: Path) -> Path:
    path = tmp_path / "wrong_crs.gpkg"
    delivery([record(i) for i in range(3)], crs=None).set_crs(3405).to_file(path)
    return path


@pytest.mark.parametrize(
    ("make", "exit_code", "message"),
    [
        (_no_crs_far_away, 12, "no VN-2000 system places its coordinates in Bình Thuận"),
        (_empty_layer, 11, "holds no parcels"),
        (_not_what_its_name_says, 10, "not a readable GeoPackage"),
        (_truncated_shapefile, 10, "truncated Shapefile"),
        (
            _truncated_geopackage,
            10,
            "not a readable GeoPackage (damaged or cut short: SQLite says database disk image is"
            " malformed)",
        ),
        (
            _wrong_crs,
            12,
            "coordinates fit VN-2000 / TM-3 108-30 (EPSG:9218), not VN-2000 / UTM zone 48N",
        ),
    ],
)
def test_unusable_delivery_is_refused_and_changes_nothing(
    register, cli_env, tmp_path, sample, make, exit_code, message
):
    load_json(sample, cli_env)
    before = table_counts(register)
    path = make(tmp_path)
    result = run_cli("load", str(path), env=cli_env)
    assert result.returncode == exit_code, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("landpipe: ") and message in result.stderr
    after = table_counts(register)
    # Only the refused attempt is recorded, as a failed batch; no parcel changed.
    assert {k: v for k, v in after.items() if k != "batch"} == {
        k: v for k, v in before.items() if k != "batch"
    }
    with register.connect() as connection:
        refusals = connection.execute(
            sa.text("SELECT status, error FROM land.batch WHERE status <> 'loaded'")
        ).all()
    assert [status for status, _ in refusals] == ["failed"]
    assert message in refusals[0][1]


def test_a_coordinate_that_is_no_number_rejects_its_record_not_the_delivery(
    register, cli_env, tmp_path
):
    """A vertex exported as NaN made GEOS raise (a traceback, no batch); coordinates of 1e300
    made an infinite area, which no finding could hold. Each rejects its record only, and a
    NaN parcel is not taken for the registered one it compares equal to."""
    first, _ = load_json(write(tmp_path, [record(i) for i in range(10)], "d1.gpkg"), cli_env)
    assert first["status"] == "loaded"
    nan = Polygon([(X0 + 10, Y0), (math.nan, Y0), (X0 + 20, Y0 + 10), (X0 + 10, Y0 + 10)])
    records = [record(i) for i in range(10)]
    records[1]["geometry"] = nan
    records.append(record(10, geometry=box(0, 0, 1e300, 1e300)))
    summary, result = load_json(write(tmp_path, records, "d2.gpkg"), cli_env, "--no-report")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "RuntimeWarning" not in result.stderr
    assert summary["parcels"] == {"read": 11, "loaded": 9, "repaired": 0, "rejected": 2}
    assert summary["issues"] == {"GEOM_INVALID": 1, "GEOM_OUT_OF_EXTENT": 1}
    assert summary["changes"] == {"added": 0, "changed": 0, "unchanged": 9, "retired": 0}
    assert rows(
        register,
        "SELECT source_row, rule_codes, geom IS NULL, f.message FROM land.rejected_record r"
        " JOIN land.finding f USING (batch_id, source_row) WHERE batch_id = :batch ORDER BY 1",
        batch=summary["batch"],
    ) == [
        (
            1,
            ["GEOM_INVALID"],
            True,
            "record 1 (parcel 22924/5/2) has a coordinate that is not a number (NaN or"
            f" infinite): Invalid Coordinate[nan {Y0:.0f}]",
        ),
        (
            10,
            ["GEOM_OUT_OF_EXTENT"],
            False,
            "record 10 (parcel 22924/5/11) lies outside district 593 of commune 22924",
        ),
    ]
    # The parcel delivered broken keeps its registered version.
    assert rows(register, "SELECT count(*) FROM land.parcel WHERE sheet_no = 5") == [(10,)]


def test_missing_commune_option_is_explained(register, cli_env, tmp_path):
    path = tmp_path / "no_commune.gpkg"
    frame = delivery([record(i) for i in range(2)]).drop(columns=["MaXa"])
    frame.to_file(path)
    refused = run_cli("load", str(path), env=cli_env)
    assert refused.returncode == 13 and "--commune" in refused.stderr
    summary, result = load_json(path, cli_env, "--commune", "22924")
    assert result.returncode == 0 and summary["parcels"]["loaded"] == 2


@pytest.mark.parametrize("option", ["--sheet", "--scale"])
def test_sheet_or_scale_zero_is_a_usage_error(cli_env, tmp_path, option):
    result = run_cli("load", str(tmp_path / "any.gpkg"), option, "0", env=cli_env)
    assert result.returncode == 2 and "1" in result.stderr and option in result.stderr


def test_bad_commune_option_is_a_usage_error(cli_env, tmp_path):
    # Full-width digits (typed with a Vietnamese input method) are no code the register holds.
    for code in ("abc", "２２９２４"):
        result = run_cli("load", str(tmp_path / "x.gpkg"), "--commune", code, env=cli_env)
        assert result.returncode == 2 and "5-digit" in result.stderr
    result = run_cli("revalidate", "--commune", "２２９２４", env=cli_env)
    assert result.returncode == 2 and "5-digit" in result.stderr
    # A typo revalidated nothing, and said so as a success.
    result = run_cli("revalidate", "--commune", "22924", "--commune", "99999", env=cli_env)
    assert result.returncode == 2
    assert result.stderr == "landpipe: --commune 99999 is not a commune of the province\n"


def test_help_lists_the_commands(cli_env):
    result = run_cli("--help", env=cli_env)
    for command in ("load", "db", "rules", "sample"):
        assert command in result.stdout
    rules = run_cli("rules", env=cli_env)
    assert "ATTR_KEY_DUPLICATE" in rules.stdout and "reject" in rules.stdout


def test_a_database_url_that_is_no_url_is_one_line_and_exit_3(cli_env):
    env = {**cli_env, "LANDPIPE_DATABASE_URL": "foo"}
    for command in (
        ["parcel", "22924", "3", "118"],
        ["certify", "22924", "3", "1", "--serial", "X"],
    ):
        result = run_cli(*command, env=env)
        assert result.returncode == 3, result.stderr
        assert result.stderr.startswith("landpipe: not a database URL: 'foo'")
        assert result.stderr.count("\n") == 1


def test_drawing_and_legacy_text_through_the_cli(register, cli_env, tmp_path):
    from tests import delivery_files

    truth = delivery_files.truth(n_parcels=120)
    drawing = delivery_files.write("dxf", truth, tmp_path / "dxf")
    summary, result = load_json(drawing, cli_env, "--commune", "22924", "--sheet", "1")
    assert result.returncode == 0, result.stderr
    assert summary["parcels"]["loaded"] == 120
    assert summary["reading"]["linework"] is True and summary["reading"]["format"] == "DXF"

    legacy = delivery_files.legacy_shapefile(truth, tmp_path / "tcvn3" / "t.shp", "tcvn3")
    summary, result = load_json(legacy, cli_env)
    assert result.returncode == 0, result.stderr
    reading = summary["reading"]
    assert (reading["encoding"], reading["encoding_how"]) == ("tcvn3", "detected")
    assert reading["field_mapping"]["owner_name"] == "TenChu"
    with register.connect() as connection:
        owners = set(
            connection.execute(
                sa.text("SELECT owner_name FROM land.parcel WHERE batch_id = :b"),
                {"b": summary["batch"]},
            ).scalars()
        )
        stored = connection.execute(
            sa.text(
                "SELECT text_encoding, text_encoding_how, linework FROM land.batch WHERE id = :b"
            ),
            {"b": summary["batch"]},
        ).one()
    assert owners == set(truth["TenChu"])
    assert tuple(stored) == ("tcvn3", "detected", False)
    human = run_cli("load", str(legacy), env=cli_env)
    assert "tcvn3 (detected" in human.stdout


def test_unreachable_prefect_api_is_one_clear_line(cli_env, sample):
    env = {**cli_env, "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    result = run_cli("load", str(sample), env=env)
    assert result.returncode == 3
    assert result.stderr.startswith("landpipe: Prefect could not run the flow")
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1


@pytest.fixture
def prefect_home(tmp_path) -> Iterator[Path]:
    """A Prefect home of the test's own; a local server left running in it is stopped."""
    from landpipe import prefect_server

    home = tmp_path / "prefect"
    yield home
    prefect_server.stop(home)


def _without_prefect_api(cli_env: dict, tmp_path: Path, prefect_home: Path) -> dict:
    """The CLI's environment with no Prefect API, its own Prefect and landpipe homes."""
    env = {
        **cli_env,
        "LANDPIPE_HOME": str(tmp_path / "landpipe"),
        "PREFECT_HOME": str(prefect_home),
    }
    del env["PREFECT_API_URL"]
    return env


def test_without_a_prefect_api_one_local_server_serves_every_command(
    register, cli_env, sample, tmp_path, prefect_home
):
    """With no Prefect API configured, the first command starts a local Prefect server and
    leaves it running; the next ones use it (commands started together share one); one that
    died is replaced; ``landpipe db stop`` stops it."""
    import os
    import signal
    import subprocess
    import sys
    import urllib.request

    from landpipe import prefect_server

    home = prefect_home
    env = _without_prefect_api(cli_env, tmp_path, home)

    def state() -> dict:
        return json.loads((home / prefect_server.STATE).read_text())

    def flow_runs(url: str) -> list[str]:
        request = urllib.request.Request(
            f"{url}/flow_runs/filter", data=b"{}", headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return [run["state_type"] for run in json.load(response)]

    command = [str(Path(sys.executable).with_name("landpipe")), "load", str(sample), "--json"]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    together = [subprocess.Popen(command, env=env, **pipes) for _ in range(2)]
    done = [(child.wait(timeout=600), *child.communicate()) for child in together]
    assert [code for code, _, _ in done] == [0, 0], done
    notices = [err for _, _, err in done if "started a local Prefect server" in err]
    assert len(notices) == 1  # one server for both
    first = state()
    assert f"UI at {first['url'].removesuffix('/api')})" in notices[0]
    assert flow_runs(first["url"]) == ["COMPLETED", "COMPLETED"]

    again = run_cli("load", str(sample), env=env)
    assert again.returncode == 0 and "Prefect server" not in again.stderr
    assert state() == first and len(flow_runs(first["url"])) == 3
    status = run_cli("db", "status", env=env)
    assert f"local Prefect server: running, UI at {first['url'].removesuffix('/api')}" in (
        status.stdout
    )

    os.kill(first["pid"], signal.SIGKILL)  # a server that died is replaced
    replaced = run_cli("load", str(sample), env=env)
    assert replaced.returncode == 0 and "started a local Prefect server" in replaced.stderr
    second = state()
    assert second["pid"] != first["pid"] and len(flow_runs(second["url"])) == 4  # same runs

    stopped = run_cli("db", "stop", env=env)
    assert stopped.stdout.splitlines()[-1] == "local Prefect server: stopped"
    assert not (home / prefect_server.STATE).exists()
    assert not prefect_server._ours(second["pid"], home.resolve())
    assert "Prefect" not in run_cli("db", "stop", env=env).stdout


def test_a_command_interrupted_while_its_prefect_server_starts_leaves_none_running(
    cli_env, sample, tmp_path, prefect_home
):
    """Ctrl-C while the local server starts (its first start takes seconds) stops it: no
    server left running that no state file names."""
    import signal
    import subprocess
    import sys
    import time

    from landpipe import prefect_server

    env = _without_prefect_api(cli_env, tmp_path, prefect_home)
    command = [str(Path(sys.executable).with_name("landpipe")), "load", str(sample)]
    # Ctrl-C reaches the command as on a terminal, whoever ran the tests: a shell's
    # background job (CI started with `&`) hands its children SIGINT ignored.
    child = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    state = prefect_home / prefect_server.STATE
    deadline = time.monotonic() + 120
    while not state.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert state.exists(), child.communicate()
    pid = json.loads(state.read_text())["pid"]
    assert prefect_server._ours(pid, prefect_home.resolve())
    child.send_signal(signal.SIGINT)
    child.wait(timeout=120)
    assert child.returncode != 0
    assert not state.exists() and not prefect_server._ours(pid, prefect_home.resolve())


def test_the_same_file_read_otherwise_is_loaded_again_and_the_inbox_ignores_option_refusals(
    register, cli_env, tmp_path
):
    path = tmp_path / "thua_dat_22924.shp"
    synth.write_delivery(synth.generate_delivery("22924", n_parcels=60, faults=False), path)
    # Read in the wrong encoding, the names are garbled...
    wrong, _ = load_json(path, cli_env, "--encoding", "vni", "--no-report")
    assert wrong["status"] == "loaded" and wrong["issues"].get("ATTR_ENCODING")
    # ...and the same file read as it is written is compared with the register, not
    # taken for the same load: the names come right.
    right, _ = load_json(path, cli_env, "--no-report")
    assert right["status"] == "loaded" and right["batch"] != wrong["batch"]
    assert right["changes"]["changed"] == 60
    again, _ = load_json(path, cli_env, "--no-report")
    assert (again["status"], again["batch"]) == ("unchanged", right["batch"])

    def owners() -> list[str]:
        with register.connect() as connection:
            query = sa.text("SELECT owner_name FROM land.parcel ORDER BY sheet_no, parcel_no")
            return list(connection.execute(query).scalars())

    names = set(synth.generate_delivery("22924", n_parcels=60, faults=False)["TenChu"])
    assert set(owners()) == names

    # Read wrongly once more, after the right reading: loading it right again is no no-op
    # (that right reading's batch no longer says what the register holds).
    wrong, _ = load_json(path, cli_env, "--encoding", "vni", "--no-report")
    assert wrong["changes"]["changed"] == 60
    right, _ = load_json(path, cli_env, "--no-report")
    assert (right["status"], right["changes"]["changed"]) == ("loaded", 60)
    assert set(owners()) == names
    # But a newer delivery of those sheets since is never undone by loading the old file again.
    wrong, _ = load_json(path, cli_env, "--encoding", "vni", "--no-report")
    assert wrong["changes"]["changed"] == 60
    sold = synth.generate_delivery("22924", n_parcels=60, faults=False)
    sold.loc[:9, "TenChu"] = "Nguyễn Văn Mới"
    newer = tmp_path / "newer" / "thua_dat_22924.shp"
    synth.write_delivery(sold, newer)
    newer_load, _ = load_json(newer, cli_env, "--no-report")
    assert newer_load["changes"]["changed"] == 60  # the 10 sold, and the 50 read wrongly
    expected = owners()
    assert expected.count("Nguyễn Văn Mới") == 10
    again, _ = load_json(path, cli_env, "--no-report")
    assert (again["status"], again["batch"]) == ("unchanged", right["batch"])
    assert owners() == expected
    # Read otherwise (a technician putting its scale right), it is refused, not loaded over
    # the newer delivery (with --force it is loaded: see the end).
    refused, result = load_json(path, cli_env, "--scale", "2000", "--no-report")
    assert (result.returncode, refused["status"]) == (15, "failed")
    assert f"batch {newer_load['batch']} delivered its sheets anew" in refused["error"]
    assert "--force" in refused["error"]
    assert owners() == expected
    # Nor does the inbox load content again to undo a technician's load with options: that
    # load may be the right reading (a mapping the detection missed).
    wrong, _ = load_json(newer, cli_env, "--encoding", "vni", "--no-report")
    assert wrong["changes"]["changed"] == 60
    inbox = tmp_path / "again"
    inbox.mkdir()
    for part in newer.parent.glob("thua_dat_22924.*"):
        shutil.copy2(part, inbox / part.name)
    result = run_cli("inbox", str(inbox), "--quiet-seconds", "0", "--json", env=cli_env)
    assert result.returncode == 0, result.stderr
    (outcome,) = json.loads(result.stdout)["deliveries"]
    assert (outcome["status"], outcome["batch"]) == ("loaded before", newer_load["batch"])
    assert owners() != expected

    # A delivery refused because of a wrong option on the command line...
    other = tmp_path / "other" / "thua_dat_22924.shp"
    synth.write_delivery(
        synth.generate_delivery("22924", n_parcels=40, seed=5, faults=False), other
    )
    refused, result = load_json(other, cli_env, "--crs", "EPSG:4326", "--no-report")
    assert (result.returncode, refused["status"]) == (12, "failed")
    # ...is loaded by the inbox, which reads it with no option.
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for part in other.parent.iterdir():
        shutil.copy2(part, inbox / part.name)
    result = run_cli("inbox", str(inbox), "--quiet-seconds", "0", "--json", env=cli_env)
    assert result.returncode == 0, result.stderr
    (outcome,) = json.loads(result.stdout)["deliveries"]
    assert outcome["status"] == "loaded"

    # The old file read otherwise, with --force: loaded over all those deliveries.
    refused, result = load_json(path, cli_env, "--scale", "2000", "--no-report")
    assert (result.returncode, refused["status"]) == (15, "failed")
    forced, result = load_json(path, cli_env, "--scale", "2000", "--force", "--no-report")
    assert (result.returncode, forced["status"]) == (0, "loaded"), result.stderr
    assert set(owners()) == names


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["x.txt"], "cannot tell the driver from"),
        (["x.shp", "--parcels", "0"], "n_parcels must be at least 1, got 0"),
        (["x.shp", "--commune", "1"], "the sample generator places only these communes"),
        (["x.shp", "--commune", "22927"], "the sample generator places only these communes"),
    ],
)
def test_sample_refuses_a_wrong_argument_in_one_line(cli_env, tmp_path, arguments, message):
    result = run_cli("sample", str(tmp_path / arguments[0]), *arguments[1:], env=cli_env)
    assert result.returncode == 2
    assert result.stderr.startswith("landpipe: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("arguments", "code", "message"),
    [
        (["find", "--xy", "nan,1"], 2, "--xy 'nan,1' is not two numbers as A,B"),
        (["find", "--at", "11,inf"], 2, "--at '11,inf' is not two numbers as A,B"),
        (
            ["revalidate", "--dask-address", "garbage"],
            2,
            "--dask-address 'garbage' is no scheduler address (tcp://host:8786)",
        ),
        (
            ["sample", "/proc/a.shp", "--no-faults"],
            3,
            "cannot write /proc/a.shp: Failed to create file",
        ),
    ],
)
def test_a_wrong_argument_is_one_line_not_a_traceback(cli_env, arguments, code, message):
    result = run_cli(*arguments, env=cli_env)
    assert result.returncode == code, result.stderr
    assert result.stderr.startswith(f"landpipe: {message}") and result.stderr.count("\n") == 1


def test_an_argument_that_is_no_utf8_is_one_line_and_exit_2(cli_env, tmp_path):
    """A delivery in a folder named in TCVN3 on an office PC, or an owner typed on a terminal
    in VNI, reaches Python as lone surrogates, which neither the register nor Prefect carry."""
    folder = tmp_path / os.fsdecode(b"th\xfea_dat")  # "thửa" in TCVN3
    folder.mkdir()
    for arguments in (["load", str(folder)], ["find", "--owner", os.fsdecode(b"Tr\xe0n")]):
        result = run_cli(*arguments, env=cli_env)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr == (
        "landpipe: the argument 'Tr\\xe0n' is not UTF-8 (a name or text in TCVN3, VNI or"
        " Windows-1258?): rename the file or folder, or type the text in UTF-8\n"
    )
    # A folder delivery holding such a file is refused as a source, recorded as a failed batch.
    delivery = tmp_path / "giao_nop_22924"
    written = delivery / "thua_dat.gpkg"
    synth.write_delivery(synth.generate_delivery("22924", n_parcels=5, faults=False), written)
    written.rename(delivery / os.fsdecode(b"th\xfea_dat.gpkg"))  # GDAL cannot write that name
    refused = run_cli("load", str(delivery), "--json", env=cli_env)
    assert refused.returncode == 10, refused.stderr
    summary = json.loads(refused.stdout)
    assert summary["error"] == (
        f"{delivery}: the name of th\\xfea_dat.gpkg is not UTF-8 (TCVN3, VNI or"
        " Windows-1258?): rename it"
    )
    assert summary["status"] == "failed" and summary["batch"] is not None
