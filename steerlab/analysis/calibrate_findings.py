"""Plain-language findings of a calibration, and writing its results to disk."""

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from steerlab.analysis.calibrate import CalibrationResult
from steerlab.analysis.matched import MIN_ITEMS


def _ci(mean: float, lo: float, hi: float, fmt: str = "{:+.2f}") -> str:
    return f"{fmt.format(mean)} [{fmt.format(lo)}, {fmt.format(hi)}]"


def _pct(mean: float, lo: float, hi: float) -> str:
    return f"{100 * mean:.0f}% [{100 * lo:.0f}, {100 * hi:.0f}]"


def _excludes_zero(lo: float, hi: float) -> bool:
    return lo > 0 or hi < 0


def _at_cap(result: CalibrationResult) -> list[str]:
    cap = result.config.kl_cap
    m = result.matched
    if m.empty:
        return []
    rows = m[(m["target"] - cap).abs() < 1e-12].sort_values("effect", ascending=False)
    reached = [r for r in rows.itertuples() if r.reached]
    out = []
    if reached:
        parts = [
            f"{r.method} (layer {r.layer}) by {_ci(r.effect, r.effect_low, r.effect_high)}"
            for r in reached
        ]
        out.append(
            f"At {cap:g} nats/token of damage (KL on neutral text), the held-out margin "
            f"moves: {'; '.join(parts)} ({int(rows['n_items'].iloc[0])} test pairs, 95% "
            "paired bootstrap CIs)."
        )
    missed = [r.method for r in rows.itertuples() if not r.reached]
    if missed:
        out.append(
            f"{', '.join(missed)} never reach {cap:g} nats/token within the swept strengths "
            f"(up to strength {max(result.config.strengths):g}); see the matched-norm comparison."
        )
    return out


def _at_norm(result: CalibrationResult) -> list[str]:
    """The effect at the largest strength every chosen method was swept to."""
    m = result.matched_norm
    if m.empty or not m["reached"].any():
        return []
    common = m.groupby("target")["reached"].all()
    if not common.any():
        return []
    s = float(common[common].index.max())
    rows = m[m["target"] == s].sort_values("effect", ascending=False)
    parts = [
        f"{r.method} (layer {r.layer}) by {_ci(r.effect, r.effect_low, r.effect_high)}"
        for r in rows.itertuples()
    ]
    return [
        f"At matched norm (strength {s:g}: each vector {s:g} times the typical residual norm "
        f"at its layer), the held-out margin moves: {'; '.join(parts)}."
    ]


def _n_test(result: CalibrationResult) -> int:
    """The number of test pairs the findings rest on."""
    m = result.matched
    return int(m["n_items"].max()) if not m.empty else int(result.config.n_test)


def _versus(where: str, a: str, b: str, d: float, lo: float, hi: float, n: int) -> str:
    """The paired difference ``a - b`` (mean, CI) in words: who moves the margin more
    (the CI excludes 0), or a tie; no winner on fewer than ``MIN_ITEMS`` pairs."""
    if n < MIN_ITEMS:
        return (
            f"{where}, {a} - {b} = {_ci(d, lo, hi)}; n = {n} test pairs is too few to say "
            "which moves the margin more."
        )
    if not _excludes_zero(lo, hi):
        return (
            f"{where}, {a} and {b} cannot be told apart (difference {_ci(d, lo, hi)}; the CI "
            "includes 0)."
        )
    if d < 0:
        a, b, d, lo, hi = b, a, -d, -hi, -lo
    return f"{where}, {a} beats {b} by {_ci(d, lo, hi)}."


def _comparison(result: CalibrationResult) -> list[str]:
    n = _n_test(result)
    return [
        _versus(f"At {r.kl:g} nats/token", r.leader, r.other, r.difference, r.low, r.high, n)
        for r in result.comparison.itertuples()
    ]


def _per_method(result: CalibrationResult) -> list[str]:
    out = []
    for r in result.test.itertuples():
        out.append(
            f"Recommended for {r.method}: layer {r.layer}, strength {r.strength:g} "
            f"(multiplier {r.multiplier:.3g}, KL {r.kl:.3f} nats/token): held-out margin "
            f"{_ci(r.effect, r.effect_low, r.effect_high)}, log p(matching) "
            f"{_ci(r.d_logp_matching, r.d_logp_matching_low, r.d_logp_matching_high)}, "
            f"log p(not matching) "
            f"{_ci(r.d_logp_not_matching, r.d_logp_not_matching_low, r.d_logp_not_matching_high)}."
        )
        if r.d_logp_matching_high < 0 and r.d_logp_not_matching_high < 0:
            out.append(
                f"At its recommended strength {r.method} makes both answers less likely (both "
                "CIs below 0): a margin moved that way is damage as much as steering."
            )
    return out


def _prompting(result: CalibrationResult) -> list[str]:
    if result.prompting.empty:
        return []
    r = result.prompting.iloc[0]
    cap = result.config.kl_cap

    def ci(name: str) -> str:
        return _ci(r[name], r[f"{name}_low"], r[f"{name}_high"])

    where = "within" if r["kl"] <= cap else "above"
    wrong = _pct(r["wrong_way_share"], r["wrong_way_low"], r["wrong_way_high"])
    out = [
        f"Prompting (the eliciting instruction in the system prompt; nothing to calibrate) "
        f"costs {r['kl']:.3f} nats/token of KL ({where} the {cap:g} cap; counted on the "
        f"tokens both prompts share) and moves the held-out margin by {ci('effect')} "
        f"(log p(matching) {ci('d_logp_matching')}, log p(not matching) "
        f"{ci('d_logp_not_matching')}); it moves {wrong} of the pairs the wrong way."
    ]
    for v in result.versus_prompt.itertuples():
        where = f"At prompting's damage ({v.kl:.3f} nats/token)"
        if math.isnan(v.difference):
            out.append(
                f"{v.method} (layer {v.layer}) never reaches prompting's damage "
                f"({v.kl:.3f} nats/token) in its sweep: no matched comparison with prompting."
            )
        else:
            out.append(
                _versus(where, v.method, "prompting", v.difference, v.low, v.high, _n_test(result))
            )
    return out


def findings(result: CalibrationResult) -> list[str]:
    """Conclusions in plain language, from the matched comparison first (on fewer than
    ``MIN_ITEMS`` test pairs, led by a warning and naming no method ahead of another)."""
    n = _n_test(result)
    out = []
    if n < MIN_ITEMS:
        out.append(
            f"Only {n} test pairs: below {MIN_ITEMS} these CIs do not hold and no method is "
            "named ahead of another; rerun with more test pairs (--n-test) to compare."
        )
    out += _at_cap(result) + _comparison(result) + _prompting(result)
    out += _at_norm(result) + _per_method(result)
    rel = result.reliability
    if not rel.empty:
        parts = [
            f"{r.method} {_pct(r.anti_share, r.anti_low, r.anti_high)}" for r in rel.itertuples()
        ]
        out.append(
            "Anti-steerable test pairs (their margin falls as the strength rises): "
            + "; ".join(parts)
            + "."
        )
        flat = [r.method for r in rel.itertuples() if not r.monotonic]
        if flat:
            out.append(
                f"Not monotonic in strength on the test pairs: {', '.join(flat)} (flagged; "
                "no end-to-end summary is given for them)."
            )
    for r in result.choices[result.choices["status"] != "ok"].itertuples():
        out.append(f"No recommendation for {r.method}: {r.status}.")
    cfg = result.config
    out.append(
        f"Chosen on {cfg.n_val} validation pairs carved from the training split (seed "
        f"{cfg.seed}); one seed: rerun with other seeds before quoting a ranking."
    )
    return out


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    def clean(v: Any) -> Any:
        if isinstance(v, float) and math.isnan(v):
            return None
        return v.item() if hasattr(v, "item") else v

    return [{k: clean(v) for k, v in row.items()} for row in frame.to_dict("records")]


def save_result(result: CalibrationResult, out_dir: Path) -> Path:
    """CSV per frame, ``summary.json`` and ``vectors/<behavior>_<method>_L<layer>``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = {
        "choices": result.choices,
        "validation": result.validation,
        "test": result.test,
        "test_items": result.test_items,
        "matched_kl": result.matched,
        "matched_norm": result.matched_norm,
        "reliability": result.reliability,
        "comparison": result.comparison,
        "training": result.training,
        "prompting": result.prompting,
        "versus_prompt": result.versus_prompt,
    }
    for name, frame in frames.items():
        frame.to_csv(out_dir / f"{name}.csv", index=False)
    vec_dir = out_dir / "vectors"
    paths = {}
    for method, vec in result.vectors.items():
        name = f"{result.behavior}_{method}_L{vec.layers[0]}.safetensors"
        paths[method] = str(vec.save(vec_dir / name).relative_to(out_dir))
    summary = {
        "behavior": result.behavior,
        "model_id": result.model_id,
        "findings": findings(result),
        "choices": _records(result.choices),
        "test": _records(result.test),
        "prompting": _records(result.prompting),
        "versus_prompt": _records(result.versus_prompt),
        "vectors": paths,
        "timings_seconds": dict(result.timings),
        "config": result.config.to_dict(),
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return out_dir
