"""Does the fair-comparison grid's BiPO budget (64 pairs, 2 epochs, lr 2e-2) understate BiPO?

Compares, on the same 100 power-seeking test pairs, the grid's BiPO vector of one cell
with BiPO trained on all training pairs (``fair_comparison.py --n-train 608 --n-val 32
--bipo-epochs 4 --bipo-lr LR --methods bipo``, one cell store per learning rate): each
vector's effect at KL 0.2 nats/token (per pair, interpolated linearly in sqrt(KL) between
swept strengths, as the grid does), the paired bootstrap CI of the differences, and the
validation score each run's best epoch reached (how an lr would be chosen).

    python benchmarks/bipo_budget.py --grid benchmarks/results/fair_comparison/cells \\
        --full /tmp/fc_full_lr0.02/cells /tmp/fc_full_lr0.005/cells \\
        --out benchmarks/results/bipo_budget/power_seeking_L14_s0.json
"""

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from steerlab.analysis.reliability import bootstrap_ci, bootstrap_indices, strength_at_kl


def effect_at_kl(cells: Path, stem: str, level: float = 0.2) -> tuple[pd.Series, dict]:
    """Per-pair margin change of the cell's BiPO vector at KL ``level`` (NaN if not reached)."""
    test = pd.read_csv(cells / f"{stem}.test.csv.gz").query("method == 'bipo'")
    kl = pd.read_csv(cells / f"{stem}.kl.csv").query("method == 'bipo'")
    kl = kl.groupby("strength")["kl"].mean().sort_index()
    target = strength_at_kl(kl.index.to_numpy(), kl.to_numpy(), level)
    if np.isnan(target):
        raise SystemExit(f"{cells}/{stem}: KL {level} not reached (max {kl.max():.3f})")
    per = test.pivot_table(index="item", columns="strength", values="d_margin")
    eff = per.apply(lambda r: np.interp(target, r.index.to_numpy(), r.to_numpy()), axis=1)
    train = pd.read_csv(cells / f"{stem}.training.csv")
    train = train[train["method"] == "bipo"] if "method" in train else train
    info = {"strength_at_kl": target, "kl_by_strength": kl.round(4).to_dict()}
    ep = train[train["kind"] == "epoch"].dropna(subset=["score"])
    if len(ep):
        info["best_val_score"] = float(ep["score"].max())
        info["best_epoch"] = int(ep.loc[ep["score"].idxmax(), "epoch"])
        info["epochs_run"] = len(ep)
    return eff, info


def ci(x: np.ndarray, n_boot: int = 2000, seed: int = 0) -> list[float]:
    """Mean and 95% bootstrap CI; the same seed draws the same pairs for every vector."""
    return list(bootstrap_ci(x, bootstrap_indices(len(x), n_boot, seed)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--grid", required=True)
    ap.add_argument("--full", nargs="+", required=True)
    ap.add_argument("--stem", default="power-seeking_s0_L14")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    base, base_info = effect_at_kl(Path(args.grid), args.stem)
    out = {"stem": args.stem, "n_pairs": int(base.notna().sum()),
           "grid_bipo": {"effect_ci": ci(base.to_numpy()), **base_info}, "full": {}}  # fmt: skip
    for d in args.full:
        eff, info = effect_at_kl(Path(d), args.stem)
        both = pd.concat([eff, base], axis=1, keys=["full", "grid"]).dropna()
        out["full"][d] = {
            "effect_ci": ci(eff.to_numpy()),
            "full_minus_grid_ci": ci((both["full"] - both["grid"]).to_numpy()),
            **info,
        }
    text = json.dumps(out, indent=2, default=float)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
