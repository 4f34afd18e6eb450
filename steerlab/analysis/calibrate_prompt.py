"""Prompting beside the calibrated vectors: ``calibrate(methods=(..., "prompt"))``.

Prompting (the behavior's eliciting instruction appended to the system prompt,
:mod:`steerlab.steering.prompting`) has no layer or strength to choose, so it is not
calibrated: it is scored once on the same test pairs and neutral texts as the chosen
vectors, and each chosen vector is compared with it *at prompting's own damage* (the
vector's strength interpolated to the KL prompting causes), with a paired bootstrap CI
over the same test pairs. Prompting's KL counts the tokens both prompts share (its
system turn differs by design; see :mod:`steerlab.evaluation.prompting`).
"""

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from steerlab.analysis.calibrate import change_cis
from steerlab.analysis.reliability import bootstrap_ci, bootstrap_indices, curves, strength_at_kl
from steerlab.data.neutral import NeutralSet
from steerlab.evaluation.damage import logprob_changes
from steerlab.models.model import SteerlabModel

#: The method name that selects prompting in ``CalibrateConfig.methods``.
PROMPT = "prompt"

PROMPT_COLUMNS = (
    "method",
    "kl",
    "n",
    "effect",
    "effect_low",
    "effect_high",
    "d_logp_matching",
    "d_logp_matching_low",
    "d_logp_matching_high",
    "d_logp_not_matching",
    "d_logp_not_matching_low",
    "d_logp_not_matching_high",
    "wrong_way_share",
    "wrong_way_low",
    "wrong_way_high",
)
VERSUS_COLUMNS = ("method", "layer", "kl", "strength", "difference", "low", "high")


def vector_methods(methods: Sequence[str]) -> tuple[str, ...]:
    """``methods`` without prompting (the ones fitted and calibrated)."""
    return tuple(m for m in methods if m != PROMPT)


def score_prompt(
    model: SteerlabModel,
    behavior: str,
    test_pairs: Sequence[Any],
    neutral: NeutralSet,
    batch_size: int,
) -> tuple[pd.DataFrame, float]:
    """Per test pair the changes under the eliciting prompt (sign +1 vs the model's own
    system prompt), and prompting's KL in nats/token on ``neutral``."""
    from steerlab.evaluation.prompting import prompt_kl_damage, prompt_likelihood_margin

    items = prompt_likelihood_margin(
        model, test_pairs, behavior, (0, 1), batch_size=batch_size, per_item=True
    )
    changes = logprob_changes(items)
    kl = prompt_kl_damage(model, behavior, (0, 1), neutral=neutral, batch_size=batch_size)
    own = float(kl.loc[kl["multiplier"] == 1.0, "kl"].iloc[0])
    return changes[changes["multiplier"] == 1.0].sort_values("item"), own


def prompt_table(items: pd.DataFrame, kl: float, n_boot: int, seed: int) -> pd.DataFrame:
    """One row: prompting's KL and its effects with paired bootstrap CIs (the resamples
    of the vectors' test table: same n and seed), and the share of pairs it moves the
    wrong way (margin falls)."""
    idx = bootstrap_indices(len(items), n_boot, seed)
    row: dict[str, Any] = {"method": PROMPT, "kl": kl, "n": len(items), **change_cis(items, idx)}
    wrong = (items["d_margin"].to_numpy(dtype=float) < 0).astype(float)
    share, lo, hi = bootstrap_ci(wrong, idx)
    row.update({"wrong_way_share": share, "wrong_way_low": lo, "wrong_way_high": hi})
    return pd.DataFrame([row], columns=list(PROMPT_COLUMNS))


def versus_prompt(
    test_items: pd.DataFrame,
    kl_test: pd.DataFrame,
    items: pd.DataFrame,
    kl: float,
    n_boot: int,
    seed: int,
) -> pd.DataFrame:
    """Each chosen vector's effect minus prompting's, per test pair, at prompting's KL
    (the vector's strength interpolated to that damage); NaN where its sweep never
    reaches that KL. Positive: the vector moves the margin more at equal damage."""
    prompt_effect = items.sort_values("item")["d_margin"].to_numpy(dtype=float)
    idx = bootstrap_indices(len(prompt_effect), n_boot, seed)
    rows = []
    for c in curves(test_items, "strength", "margin", kl=kl_test):
        assert c.kl is not None
        s = strength_at_kl(c.x, c.kl, kl) if kl > 0 else math.nan
        if math.isnan(s) or c.n_items != len(prompt_effect):
            d = lo = hi = math.nan
        else:
            d, lo, hi = bootstrap_ci(np.asarray(c.effects_at(s)) - prompt_effect, idx)
        rows.append(
            {
                "method": c.method,
                "layer": c.layer,
                "kl": kl,
                "strength": s,
                "difference": d,
                "low": lo,
                "high": hi,
            }
        )
    return pd.DataFrame(rows, columns=list(VERSUS_COLUMNS))
