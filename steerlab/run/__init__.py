"""The main job (``steerlab run``): fit, evaluate and report at one layer."""

from steerlab.run.config import QUICK, RunConfig, read_config_file
from steerlab.run.pipeline import RunResult, build_report, run_pipeline, write_outputs

__all__ = [
    "QUICK",
    "RunConfig",
    "RunResult",
    "build_report",
    "read_config_file",
    "run_pipeline",
    "write_outputs",
]
