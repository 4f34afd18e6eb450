"""The paper's experiments as notebooks: each one is stored without outputs, has one
parameter cell, ends with a paper-vs-this-run table, and executes top to bottom on its
tiny settings (nbclient, a real kernel, the venv's interpreter)."""

import os
import sys
import time
from pathlib import Path

import nbformat
import pytest

NB_DIR = Path(__file__).resolve().parents[1] / "notebooks"
EXPECTED = (
    "00_quickstart",
    "01_personas",
    "02_truthfulness_hallucination",
    "03_jailbreak",
    "04_transfer",
    "05_combination",
    "06_utility_mmlu",
    "07_geometry_and_layer_sweep",
    "08_ablations",
    "09_in_context",
    "10_training_cost",
    "11_dpo_lora",
    "12_conditional_steering",
)
NOTEBOOKS = sorted(NB_DIR.glob("[0-9][0-9]_*.ipynb"))


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def test_every_experiment_has_a_notebook_listed_in_the_readme():
    assert tuple(p.stem for p in NOTEBOOKS) == EXPECTED
    readme = (NB_DIR.parent / "README.md").read_text()
    for name in EXPECTED:
        assert f"{name}.ipynb" in readme, f"README does not list {name}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_clean_with_one_parameter_cell(path):
    nb = _read(path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), (
        f"{path.name} has outputs; strip them before committing"
    )
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, f"{path.name}: expected one cell tagged 'parameters'"
    assert "FULL" in params[0].source, f"{path.name}: document the full settings"
    assert "paper" in code[-1].source.lower(), f"{path.name}: end with the paper-vs-run table"


@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    # The kernel must be this interpreter (the venv's), whatever "python" is on PATH.
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    # Tiny settings are overhead-bound: one thread is faster and leaves a core to others.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = _read(path)
    t = time.perf_counter()
    NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    elapsed = time.perf_counter() - t
    last = [c for c in nb.cells if c.cell_type == "code"][-1]
    shown = " ".join(
        str(o.get("data", {}).get("text/plain", "")) + str(o.get("text", "")) for o in last.outputs
    )
    assert "paper" in shown.lower(), f"{path.name}: the last cell must display the table"
    print(f"{path.name}: {elapsed:.1f} s")
