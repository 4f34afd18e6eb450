"""``steerlab judge fit``: fit the offline classifier judge on a behavior's last train
pairs, validate it on the test pairs, save it for ``steerlab eval open --judge classifier``.

The judge's pairs are the *last* ``--n-judge`` train pairs, so vectors fitted on the
first ones (``steerlab vector fit|train --n-train N`` with N at most the rest) are
disjoint from them; the file records which pairs they were, and ``eval open`` refuses a
vector whose provenance shows it was fitted on any of them.
"""

import json
import time
from pathlib import Path

import typer

from steerlab.cli import _common
from steerlab.cli._common import BEHAVIOR, DEVICE

judge_app = _common.new_app("Offline judges: fit and validate a classifier judge.")

#: Below this lower CI bound of the test accuracy the judge is reported as weak.
WEAK_ACCURACY = 0.75


@judge_app.command("fit")
def fit_cmd(
    behavior: str = BEHAVIOR,
    n_judge: int = _common.count_option(
        160,
        "--n-judge",
        help="Fit on the last N train pairs (vectors fitted on the first ones stay disjoint).",
    ),
    features: str = typer.Option(
        "answer", help="'answer' (BiPO pairs) or 'question+answer' (yes/no persona items)."
    ),
    n_test: int | None = _common.count_option(
        None, "--n-test", help="Validate on the first N test pairs (default all)."
    ),
    seed: int = typer.Option(0, help="Seed of the judge's internal hold-out and of the CIs."),
    device: str | None = DEVICE,
    out: Path | None = typer.Option(
        None,
        help="Judge file (JSON; default judges/BEHAVIOR.json); the validation goes "
        "beside it as *.validation.json.",
    ),  # fmt: skip
) -> None:
    """Fit a classifier judge (MiniLM embeddings + logistic regression, score = 1 + 3
    P(matching)) on the last --n-judge train pairs; print and save its accuracy on the
    behavior's test pairs with a 95% CI."""
    from steerlab.data import load_pairs
    from steerlab.evaluation.judges.classifier import FEATURES
    from steerlab.evaluation.judges.judge_pairs import fit_split_judge
    from steerlab.evaluation.judges.validation import pair_accuracy

    behavior = _common.check_behavior(behavior)
    if features not in FEATURES:
        raise typer.BadParameter(f"--features {features!r}: use one of {', '.join(FEATURES)}.")
    out = Path(out) if out is not None else Path("judges") / f"{behavior}.json"
    _common.check_out_file(out)
    t0 = time.perf_counter()
    data = load_pairs(behavior, seed=seed)
    split = data.split(None, n_test, seed, n_judge=n_judge)
    with _common.console().status(f"fitting on {len(split.judge)} judge pairs..."):
        judge = fit_split_judge(data, split, n_judge, seed=seed, features=features,
                                device=device or "cpu")  # fmt: skip
    test = list(split.test)
    with _common.console().status(f"validating on {len(test)} test pairs..."):
        acc = pair_accuracy(judge, [p.question for p in test], [p.matching for p in test],
                            [p.not_matching for p in test], seed=seed)  # fmt: skip
    judge.save(out)
    record = judge.pairs or {}
    report = {"judge": str(out), "behavior": behavior, "features": features,
              "weights_sha": judge.weights_hash(), "pairs": record,
              "internal_heldout_accuracy": judge.heldout_accuracy,
              "internal_n_test": judge.n_test, "test": acc,
              "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
    low = acc["accuracy_ci95"][0]
    if low < WEAK_ACCURACY:
        report["warning"] = (
            f"weak judge: its test accuracy's 95% CI reaches down to {low:.3f} (below "
            f"{WEAK_ACCURACY}); scores it gives separate the behavior poorly, so differences "
            "between vectors graded by it say little"
        )
    val_path = out.with_name(out.stem + ".validation.json")
    val_path.write_text(json.dumps(report, indent=1), encoding="utf-8")
    _print_fit(report)
    if "warning" in report:
        typer.echo(f"warning: {report['warning']}", err=True)
    _common.console().print(f"judge: {out}\nvalidation: {val_path}")


def _print_fit(report: dict) -> None:
    from rich.table import Table

    acc, pairs = report["test"], report["pairs"]
    start = pairs.get("start")
    title = (f"classifier judge for {report['behavior']}: fitted on {pairs.get('n_pairs')} train "
             f"pairs (indices {start}..{pairs.get('stop', 0) - 1}; vectors fitted on at most "
             f"the first {start} are disjoint from them), {report['seconds']:.0f}s")  # fmt: skip
    t = Table(title=title, caption="95% percentile bootstrap CIs over the test pairs (2000 "
              "resamples); the judge never saw them. Accuracy: an answer is right when its "
              "P(matching) is >= 0.5 for the matching answer, < 0.5 for the other; pairwise: "
              "the matching answer scores higher.")  # fmt: skip
    for col in ("measure", "value", "n"):
        t.add_column(col, justify="left" if col == "measure" else "right")
    lo, hi = acc["accuracy_ci95"]
    t.add_row("test accuracy", f"{acc['accuracy']:.3f} [{lo:.3f}, {hi:.3f}]",
              f"{acc['n_answers']} answers")  # fmt: skip
    lo, hi = acc["pairwise_ci95"]
    t.add_row("pairwise accuracy", f"{acc['pairwise_accuracy']:.3f} [{lo:.3f}, {hi:.3f}]",
              f"{acc['n_pairs']} pairs")  # fmt: skip
    t.add_row("mean score, matching / not", f"{acc['mean_score_matching']:.2f} / "
              f"{acc['mean_score_not_matching']:.2f}", "")  # fmt: skip
    t.add_row("share the coherence gate rejects", f"{acc['gate_rejected_share']:.3f}",
              f"{acc['n_answers']} answers")  # fmt: skip
    t.add_row("internal hold-out accuracy", f"{report['internal_heldout_accuracy']:.3f}",
              f"{report['internal_n_test']} answers")  # fmt: skip
    _common.console().print(t)
