"""Pairs and datasets: values, file loaders, the behavior registry, data roots and fetch.

Re-exports only; see the submodules for details.
"""

from steerlab.data._rows import SKIP_KINDS
from steerlab.data.behaviors import (
    BEHAVIORS,
    CAA_OPEN_ENDED,
    BehaviorSpec,
    get_behavior,
    list_behaviors,
    load_advbench,
    load_mmlu,
    load_open_ended,
    load_pairs,
    load_truthfulqa_ab,
    load_truthfulqa_mc,
    register_behavior,
    split_indices,
)
from steerlab.data.benchmarks import (
    AdvBench,
    AdvBenchItem,
    MCDataset,
    MCItem,
    TruthfulQADataset,
    TruthfulQAItem,
)
from steerlab.data.choices import format_choices, parse_letter, split_choices
from steerlab.data.convert import as_ab_items, as_pairs
from steerlab.data.fetch import FetchReport, FileStatus, fetch, verify
from steerlab.data.importers import load_pairs_from
from steerlab.data.loaders_csv import (
    load_advbench_behaviors,
    load_advbench_strings,
    load_bipo_ab_csv,
    load_bipo_csv,
)
from steerlab.data.loaders_json import (
    load_anthropic_jsonl,
    load_caa_ab_json,
    load_caa_mc_json,
    load_caa_open_ended_json,
    load_truthfulqa_mc_json,
)
from steerlab.data.manifest import Manifest, ManifestEntry, load_manifest
from steerlab.data.pairs import (
    ABDataset,
    ABItem,
    BehaviorData,
    HeldOutSplit,
    PairDataset,
    PreferencePair,
    Skip,
    pairs_to_ab,
)
from steerlab.data.roots import candidate_roots, find_data_file, resolve_data_root
from steerlab.data.splits import held_out, split_items

__all__ = [
    "BEHAVIORS",
    "CAA_OPEN_ENDED",
    "SKIP_KINDS",
    "ABDataset",
    "ABItem",
    "AdvBench",
    "AdvBenchItem",
    "BehaviorData",
    "BehaviorSpec",
    "FetchReport",
    "FileStatus",
    "HeldOutSplit",
    "MCDataset",
    "MCItem",
    "Manifest",
    "ManifestEntry",
    "PairDataset",
    "PreferencePair",
    "Skip",
    "TruthfulQADataset",
    "TruthfulQAItem",
    "as_ab_items",
    "as_pairs",
    "candidate_roots",
    "fetch",
    "find_data_file",
    "format_choices",
    "get_behavior",
    "held_out",
    "list_behaviors",
    "load_advbench",
    "load_advbench_behaviors",
    "load_advbench_strings",
    "load_anthropic_jsonl",
    "load_bipo_ab_csv",
    "load_bipo_csv",
    "load_caa_ab_json",
    "load_caa_mc_json",
    "load_caa_open_ended_json",
    "load_manifest",
    "load_mmlu",
    "load_open_ended",
    "load_pairs",
    "load_pairs_from",
    "load_truthfulqa_ab",
    "load_truthfulqa_mc",
    "load_truthfulqa_mc_json",
    "pairs_to_ab",
    "parse_letter",
    "register_behavior",
    "resolve_data_root",
    "split_choices",
    "split_indices",
    "split_items",
    "verify",
]
