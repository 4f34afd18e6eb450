"""The tables ``steerlab eval`` prints: the mean and the paired change of every condition
with CIs (:func:`print_changes`), and the KL damage column beside them (:func:`kl_damage_of`,
:func:`with_kl`). Shared by ``eval ab|likelihood|open`` and the benchmark commands."""

from collections.abc import Sequence
from typing import Any

from steerlab.cli import _common


def kl_damage_of(model: Any, vecs: list[Any], mults: Any, strengths: list[float] | None,
               n_neutral: int, progress: bool) -> Any:  # fmt: skip
    """``kl_damage`` of the conditions on ``n_neutral`` neutral texts (``attrs['n_texts']``),
    or None without vectors or with ``n_neutral`` 0."""
    if not vecs or n_neutral <= 0:
        return None
    from steerlab.data.neutral import load_neutral_set
    from steerlab.evaluation.damage import kl_damage

    neutral = load_neutral_set(n=n_neutral)
    kl = kl_damage(model, vecs, mults, strengths=strengths, neutral=neutral, progress=progress)
    kl.attrs["n_texts"] = len(neutral)  # its own batch size: full-vocabulary rows
    return kl


def with_kl(table: Any, kl: Any) -> tuple[Any, str]:
    """``table`` (of :func:`~steerlab.analysis.effects.paired_changes`) with the ``kl``
    column of :func:`kl_damage_of`'s frame, and the caption's note on it."""
    if kl is None:
        return table, ""
    key = "strength" if "strength" in table.columns else "multiplier"
    table = table.merge(kl[["vector", key, "kl"]], on=["vector", key], how="left")
    return table, (f"KL: mean KL(steered || unsteered) in nats per token on {kl.attrs['n_texts']} "
                   "neutral texts (damage; compare vectors at matched KL too).")  # fmt: skip


def with_x0(multipliers: Sequence[float], vectors: Sequence[Any] | None) -> list[float]:
    """The multipliers with 0 added when there are vectors: changes are measured against it."""
    return sorted({0.0, *multipliers}) if vectors else list(multipliers)


def _kl_text(value: float) -> str:
    """A KL in nats/token: 3 decimals, or 2 significant digits below 0.001."""
    if value != value:
        return "-"
    return f"{value:.1e}" if 0 < value < 1e-3 else f"{value:.3f}"


def _ci(mean: float, low: float, high: float, fmt: str) -> str:
    if mean != mean:
        return "-"
    return f"{mean:{fmt}} [{low:{fmt}}, {high:{fmt}}]"


def print_changes(table: Any, title: str, show_n: bool = False, kl_note: str = "") -> None:
    """``table``: one metric's rows of :func:`~steerlab.analysis.effects.paired_changes`
    (``n``: the items with a value, shown with ``show_n`` or when it differs between
    rows: a judge's unparseable verdicts are left out; a ``kl`` column, described by
    ``kl_note``, is shown when there is one)."""
    from rich.table import Table

    from steerlab.analysis.matched import MIN_ITEMS

    by_strength = "strength" in table.columns
    zero = "strength 0" if by_strength else "x0"
    caption = (
        "95% percentile bootstrap CIs over the items (2000 resamples); the change is "
        f"paired: each item against itself at {zero}."
    )
    if by_strength:
        caption += (
            " Strength: |k v| / mean ||h|| at the vector's site (matched norm); x: the "
            "multiplier of the vector as saved ('-' where its sites need different ones)."
        )
    if kl_note:
        caption += " " + kl_note
    if table["n"].min() < MIN_ITEMS:
        caption += f" Rows with n < {MIN_ITEMS}: too few items for these CIs to hold."
    out = Table(title=title, caption=caption)
    out.add_column("vector", overflow="fold")
    if by_strength:
        out.add_column("strength", justify="right")
    out.add_column("x", justify="right")
    varying_n = show_n or table["n"].nunique() > 1  # else the title gives it
    if varying_n:
        out.add_column("n", justify="right")
    out.add_column("mean [95% CI]", justify="right")
    out.add_column(f"change vs {zero} [95% CI]", justify="right")
    with_kl = "kl" in table.columns
    if with_kl:
        out.add_column("KL", justify="right")
    unit = table["mean"].dropna().between(0.0, 1.0).all()  # probabilities, shares
    fmt = ".3f" if unit else ".2f"
    last = None
    for r in table.itertuples(index=False):
        at_zero = (r.strength if by_strength else r.multiplier) == 0
        change = zero if at_zero else _ci(r.change, r.change_low, r.change_high, "+" + fmt)
        label = "" if r.vector == last else str(r.vector)
        cond = [f"{r.strength:g}"] if by_strength else []
        cond.append("-" if r.multiplier != r.multiplier else f"{r.multiplier:.3g}")
        n = [str(r.n)] if varying_n else []
        kl = [_kl_text(r.kl)] if with_kl else []
        out.add_row(label, *cond, *n, _ci(r.mean, r.low, r.high, fmt), change, *kl)
        last = r.vector
    _common.console().print(out)
