"""Load a script from ``benchmarks/`` as a module (its siblings, such as ``_env`` and
``_report``, importable while it loads)."""

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str) -> ModuleType:
    """``benchmarks/{name}.py`` as the module ``steerlab_bench_{name}``."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(
            f"steerlab_bench_{name}", BENCHMARKS / f"{name}.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


def assert_refused(name: str, argv: list[str], says: str, capsys) -> None:
    """``benchmarks/{name}.py argv`` stops with argparse's usage error (exit 2) saying
    ``says``, before any measurement."""
    import pytest

    bench = load_benchmark(name)
    with pytest.raises(SystemExit) as err:
        bench.main(argv)
    assert err.value.code == 2 and says in capsys.readouterr().err
