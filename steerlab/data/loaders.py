"""All file loaders in one namespace (re-exports of :mod:`loaders_csv` and :mod:`loaders_json`)."""

from steerlab.data.loaders_csv import (
    AB_COLUMNS,
    PAIR_COLUMNS,
    iter_csv_records,
    load_advbench_behaviors,
    load_advbench_strings,
    load_bipo_ab_csv,
    load_bipo_csv,
    read_csv_header,
)
from steerlab.data.loaders_json import (
    iter_json_array,
    iter_jsonl,
    load_anthropic_jsonl,
    load_caa_ab_json,
    load_caa_mc_json,
    load_caa_open_ended_json,
    load_truthfulqa_mc_json,
)

__all__ = [
    "AB_COLUMNS",
    "PAIR_COLUMNS",
    "iter_csv_records",
    "iter_json_array",
    "iter_jsonl",
    "load_advbench_behaviors",
    "load_advbench_strings",
    "load_anthropic_jsonl",
    "load_bipo_ab_csv",
    "load_bipo_csv",
    "load_caa_ab_json",
    "load_caa_mc_json",
    "load_caa_open_ended_json",
    "load_truthfulqa_mc_json",
    "read_csv_header",
]
