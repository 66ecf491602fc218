"""The analysts' notebooks run top to bottom, in a real Jupyter kernel, on a register that a
real load filled: a notebook that no test runs breaks unseen when the views change."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from landpipe import synth
from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.slow

NOTEBOOKS = REPO / "notebooks"


def run_notebook(path: Path, *, then: str) -> list[nbformat.NotebookNode]:
    """Run the notebook at ``path`` as Jupyter would (in its folder, with the landpipe
    environment), then the code ``then`` in the same kernel; returns the cells, run."""
    notebook = nbformat.read(path, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(then))
    client = NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    return notebook.cells


def test_every_notebook_is_tested():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == ["parcels_of_a_commune.ipynb"]


def test_parcels_of_a_commune_shows_its_parcels_findings_and_rejected_records(
    register, cli_env, tmp_path, monkeypatch
):
    # Another commune's delivery first: its findings and rejected records are not shown.
    other = synth.placeable_communes()[1]
    elsewhere = tmp_path / f"thua_dat_{other}.shp"
    synth.write_delivery(synth.generate_delivery(other, n_parcels=300), elsewhere)
    loaded = run_cli("load", str(elsewhere), "--no-report", "--json", env=cli_env)
    assert loaded.returncode == 0, loaded.stderr
    assert json.loads(loaded.stdout)["parcels"]["rejected"] > 0
    delivery = tmp_path / "thua_dat_22924.shp"
    synth.write_delivery(synth.generate_delivery("22924"), delivery)
    loaded = run_cli("load", str(delivery), "--no-report", "--json", env=cli_env)
    assert loaded.returncode == 0, loaded.stderr
    counts = json.loads(loaded.stdout)["parcels"]
    assert counts["rejected"] > 0
    batch = json.loads(loaded.stdout)["batch"]
    # The kernel gets this process's environment: the test register.
    for name in ("LANDPIPE_DATABASE_URL", "LANDPIPE_HOME"):
        monkeypatch.setenv(name, cli_env[name])
    monkeypatch.delenv("MPLBACKEND", raising=False)  # Jupyter's own: figures as images

    cells = run_notebook(
        NOTEBOOKS / "parcels_of_a_commune.ipynb",
        then="import json\n"
        "print(json.dumps({'parcels': len(parcels),"
        " 'communes': sorted(parcels['commune_code'].unique().tolist()),"
        " 'rejected': len(rejected), 'crs': parcels.crs.to_epsg()}))",
    )

    outputs = [output for cell in cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    seen = json.loads(cells[-1].outputs[0].text)
    assert seen == {
        "parcels": counts["loaded"],
        "communes": ["22924"],
        "rejected": counts["rejected"],
        "crs": 9218,
    }
    # The map of the sheets is drawn, and the findings are counted by rule.
    assert any("image/png" in output.get("data", {}) for output in outputs)
    shown = "".join(str(output.get("data", {}).get("text/plain", "")) for output in outputs)
    assert "GEOM_INVALID" in shown and "ATTR_KEY_DUPLICATE" in shown
    # Its history: the commune after its one delivery is the commune now.
    printed = "".join(output.get("text", "") for output in outputs)
    assert f"after batch {batch}: {counts['loaded']} parcels; now: {counts['loaded']}" in printed
