"""Sweeps and calibration on Ray: cells as tasks on 2 local workers (each loads the tiny
model once) give the serial sweep's frames and vectors, write the same cell store, and
resume from it; a calibration's per-layer cells give the serial calibration's tables (the
workers, started once, serve all of it)."""

import shutil
import sys
from dataclasses import replace

import pandas as pd
import pytest
import torch

from steerlab.analysis import SweepConfig, sweep
from steerlab.analysis.calibrate import CalibrateConfig, calibrate
from steerlab.analysis.executors import RayExecutor, SerialExecutor, make_executor
from steerlab.errors import ConfigError
from tests._data import SMALL_PAIRS

PAIRS = SMALL_PAIRS
ARGS = (["caa", "bipo"], [0, 1], [-1.0, 0.0, 1.0])


def frames_equal(a, b) -> None:
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True),
                                  check_dtype=False)  # fmt: skip


@pytest.mark.slow  # starting local Ray and two workers takes 50-90 s on a busy 2-core machine
def test_ray_sweep_equals_the_serial_sweep_and_resumes(tiny_model, tmp_path):
    pytest.importorskip("ray")
    cfg = SweepConfig(n_train=6, n_test=4, bipo_epochs=1, progress=False)
    serial = sweep(tiny_model, PAIRS, *ARGS, replace(cfg, out_dir=str(tmp_path / "serial")))
    ex = RayExecutor(num_workers=2, num_cpus=1, init_kwargs={"object_store_memory": 80 * 2**20})
    with ex:
        seen: list[dict] = []
        ray_cfg = replace(cfg, out_dir=str(tmp_path / "ray"))
        on_ray = sweep(tiny_model, PAIRS, *ARGS, ray_cfg, executor=ex, on_cell=seen.append)
        assert [(c["method"], c["layer"]) for c in seen] == [
            (m, x) for x in (0, 1) for m in ARGS[0]
        ]
        assert not any(c["skipped"] for c in seen) and on_ray.info["executor"] == "ray"
        frames_equal(on_ray.frame, serial.frame)
        frames_equal(on_ray.training, serial.training)
        assert all(on_ray.vectors[k].equal(serial.vectors[k]) for k in serial.vectors)
        for cell in ("caa-L0", "bipo-L1"):  # the same files as the serial store
            assert (tmp_path / "ray" / "cells" / cell / "summary.csv").exists()

        # resume: two cells lost; the rerun computes those on Ray and reads the rest
        for cell in ("caa-L1", "bipo-L1"):
            shutil.rmtree(tmp_path / "ray" / "cells" / cell)
        seen.clear()
        again = sweep(tiny_model, PAIRS, *ARGS, ray_cfg, executor=ex, on_cell=seen.append)
        cal = CalibrateConfig(methods=("caa", "bipo"), layers=(0, 1), strengths=(0.0, 0.2, 0.5),
                              kl_cap=5.0, n_train=6, n_val=4, n_test=6, n_neutral=2, n_boot=50,
                              batch_size=4, bipo_epochs=1)  # fmt: skip
        cal_ray = calibrate(tiny_model, "power-seeking", config=cal, executor=ex)
    skipped = {(c["method"], c["layer"]): c["skipped"] for c in seen}
    assert skipped == {("caa", 0): True, ("bipo", 0): True, ("caa", 1): False, ("bipo", 1): False}
    frames_equal(again.frame, serial.frame)
    assert again.vectors[("bipo", 1)].equal(serial.vectors[("bipo", 1)])
    cal_serial = calibrate(tiny_model, "power-seeking", config=cal)
    # equal up to float rounding: a worker runs 1 thread, this process 2 (reduction order)
    for name in ("validation", "choices", "test_items", "test", "matched", "training"):
        pd.testing.assert_frame_equal(getattr(cal_ray, name).reset_index(drop=True),
                                      getattr(cal_serial, name).reset_index(drop=True),
                                      check_dtype=False, rtol=1e-4, atol=1e-4)  # fmt: skip
    for m, vec in cal_serial.vectors.items():
        assert vec.layers == cal_ray.vectors[m].layers
        assert torch.allclose(vec.direction(), cal_ray.vectors[m].direction(), atol=1e-5)


def test_executor_choice_and_errors(tiny_model, monkeypatch):
    assert isinstance(make_executor("serial"), SerialExecutor)
    assert list(SerialExecutor().map(tiny_model, lambda m, a, b: a + b, [(1, 2), (3, 4)])) == [3, 7]
    with pytest.raises(ConfigError, match=r"Unknown executor 'dask'.*serial, ray"):
        make_executor("dask")
    with pytest.raises(ConfigError, match="--ray-address needs --executor ray"):
        make_executor("serial", address="auto")
    with pytest.raises(ConfigError, match="num_workers=0"):
        RayExecutor(num_workers=0)
    no_spec = replace(tiny_model, spec=None)
    with pytest.raises(ConfigError, match="has no spec"):
        list(RayExecutor().map(no_spec, len, [(1,)]))
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ConfigError, match=r"pip install 'steerlab\[ray\]'"):
        list(RayExecutor().map(tiny_model, len, [(1,)]))


@pytest.mark.parametrize("command", ["sweep", "calibrate"])
def test_sweep_and_calibrate_cli_have_executor_options(command):
    from typer.testing import CliRunner

    from steerlab.cli import app

    runner = CliRunner()
    help_text = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"}).output
    for flag in ("--executor", "--ray-address", "--ray-workers"):
        assert flag in help_text
    bad = runner.invoke(app, [command, "--ray-address", "auto"], env={"COLUMNS": "200"})
    assert bad.exit_code == 1 and "--ray-address needs --executor ray" in bad.output
    bad = runner.invoke(app, [command, "--executor", "dask"], env={"COLUMNS": "200"})
    assert bad.exit_code != 0 and "dask" in bad.output
