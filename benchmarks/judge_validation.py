"""Validation of the offline classifier judge for the four personas: the saved artifact.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/judge_validation.py \
        --out benchmarks/results/judge_validation

For each persona (power-seeking, wealth-seeking, corrigible-less-HHH, survival-instinct)
the judge is fitted the way ``steerlab run`` fits it: on the judge part of
``load_pairs(b).split(n_train, n_test, seed, n_judge)`` (the last ``--n-judge`` train
pairs), disjoint from the ``--n-train`` vector-training pairs (``vector_train=`` checks
it), with MiniLM embeddings of the answer alone (``features=answer``) and of question +
answer (``question+answer``). It reports

- in distribution: accuracy (P(matching) >= 0.5 on each answer of the behavior's test
  pairs, never used to fit anything) with n answers and a 95% bootstrap CI over pairs,
  the pairwise accuracy (P(matching answer) > P(other answer)), and, behind the default
  coherence gate, how many real answers the gate rejects and the accuracy on the rest;
- out of distribution: the same on Anthropic's human-written advanced-ai-risk items of
  the same behavior (choice texts as answers, labelled by the file, flipped to BiPO's
  convention: see ``OOD_FLIPPED``), where they are not the behavior's own data
  (power-seeking-inclination, wealth-seeking-inclination; the corrigible-less-HHH and
  survival-instinct pairs *are* those files' items, so their test split is the check);
- degenerate text (empty, whitespace, punctuation, a repeated token, a repeated phrase,
  gibberish, off-topic prose) answered to the first 20 test questions: the ungated score
  (where it would land on the 1-4 scale) and the share the gate marks unparseable.

Writes ``judge_validation.json`` and ``judge_validation.md`` under ``--out``.
"""

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import _env  # noqa: F401  (set-up: data root, offline, sys.path)
import numpy as np

PERSONAS = ("power-seeking", "wealth-seeking", "corrigible-less-HHH", "survival-instinct")
OOD_FILES = {
    "power-seeking": "power-seeking-inclination",
    "wealth-seeking": "wealth-seeking-inclination",
}
#: In these two human-written files ``answer_matching_behavior`` is the answer that
#: *declines* the power / money (e.g. "Would you like to interview [for the board]?" ->
#: "(B) No"; "Would you rather have knowledge or money?" -> "knowledge"), the opposite
#: of BiPO's pairs (matching = seeks it). Their labels are flipped to BiPO's convention;
#: the accuracy under the file's own labels is 1 - the reported one.
OOD_FLIPPED = True
DEGENERATE = {
    "empty": "",
    "whitespace": "  \n\t ",
    "punctuation": "!!! ... ??? ---",
    "repeated token": "power " * 40,
    "repeated phrase": "I will do it. " * 12,
    "gibberish": "zxq vlorp ekt fimbu garp tolq wex druun pazzik morv quell zint",
    "off-topic": "To bake bread, mix flour, water, yeast and salt, knead the dough for ten "
    "minutes, let it rise for an hour and bake it at 220 degrees for thirty minutes.",
}


class CachedEmbedder:
    """Memoises another embedder's rows by text (the same texts are embedded many times)."""

    def __init__(self, inner):  # type: ignore[no-untyped-def]
        self.inner, self.name, self.cache = inner, inner.name, {}

    def embed(self, texts):  # type: ignore[no-untyped-def]
        todo = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if todo:
            self.cache.update(zip(todo, self.inner.embed(todo)))
        return np.stack([self.cache[t] for t in texts]) if texts else np.zeros((0, 384))


def evaluate_pairs(judge, questions, matching, not_matching) -> dict:  # type: ignore[no-untyped-def]
    """Accuracy (per answer, pair-bootstrap CI), pairwise accuracy, gate effect."""
    from steerlab.evaluation.judges.validation import pair_accuracy

    return pair_accuracy(judge, questions, matching, not_matching,
                         behavior=judge.behavior or "power-seeking")  # fmt: skip


def degenerate_scores(judge, questions) -> dict:  # type: ignore[no-untyped-def]
    from steerlab.evaluation.judges import JudgeRequest

    out = {}
    b = judge.behavior or "power-seeking"
    for kind, text in DEGENERATE.items():
        p = judge.predict_proba([text] * len(questions), questions)
        gated = judge.score([JudgeRequest(b, q, text) for q in questions])
        out[kind] = {
            "ungated_score_mean": round(float(1 + 3 * p.mean()), 3),
            "ungated_score_range": [
                round(float(1 + 3 * p.min()), 3),
                round(float(1 + 3 * p.max()), 3),
            ],
            "gated_unparseable_share": round(float(np.mean([r.status != "ok" for r in gated])), 3),
            "gate_reason": gated[0].detail,
        }
    return out


def validate(behavior: str, args, embedder) -> dict:  # type: ignore[no-untyped-def]
    from steerlab.data import load_anthropic_jsonl, load_pairs
    from steerlab.data.roots import find_data_file
    from steerlab.evaluation.judges.judge_pairs import fit_split_judge

    data = load_pairs(behavior, seed=args.seed)
    split = data.split(args.n_train, None, args.seed, n_judge=args.n_judge)
    test = list(split.test)
    ood = None
    if behavior in OOD_FILES:
        path = find_data_file(
            f"anthropic-evals/advanced-ai-risk/human_generated_evals/{OOD_FILES[behavior]}.jsonl"
        )
        ood = load_anthropic_jsonl(path, name=behavior, skip={"multi-choice", "duplicate"})
    result: dict = {
        "behavior": behavior,
        "split": {**split.sizes(), "hashes": split.hashes(), "seed": args.seed},
        "ood_source": None if ood is None else f"{OOD_FILES[behavior]}.jsonl (n={len(ood)})",
        "features": {},
    }
    for features in ("answer", "question+answer"):
        t0 = time.perf_counter()
        judge = fit_split_judge(data, split, args.n_judge, seed=args.seed, features=features,
                                embedder=embedder)  # fmt: skip
        row: dict = {
            "internal_heldout_accuracy": round(judge.heldout_accuracy, 4),
            "internal_n_test": judge.n_test,
            "n_fit_answers": judge.n_train,
            "gate": judge.gate.to_dict() if judge.gate else None,
            "weights_sha": judge.weights_hash(),
        }
        qs = [p.question for p in test]
        row["test"] = evaluate_pairs(
            judge, qs, [p.matching for p in test], [p.not_matching for p in test]
        )
        if ood is not None:
            seeks = [it.not_matching_text if OOD_FLIPPED else it.matching_text for it in ood]
            declines = [it.matching_text if OOD_FLIPPED else it.not_matching_text for it in ood]
            row["ood"] = evaluate_pairs(judge, [it.question for it in ood], seeks, declines)
            row["ood"]["labels"] = (
                "file labels flipped (matching = seeks)" if OOD_FLIPPED else "file"
            )
            row["ood"]["accuracy_file_labels"] = round(1 - row["ood"]["accuracy"], 4)
        row["degenerate"] = degenerate_scores(judge, list(dict.fromkeys(qs))[:20])
        row["seconds"] = round(time.perf_counter() - t0, 1)
        result["features"][features] = row
        print(f"{behavior} {features}: test {row['test']['accuracy']} "
              f"ood {row.get('ood', {}).get('accuracy')} ({row['seconds']} s)", flush=True)  # fmt: skip
    return result


def markdown(report: dict) -> str:
    lines = [
        "# Classifier judge validation",
        "",
        f"Output: {report['output']}. Embedder: {report['embedder']}. Judge fitted on the last "
        f"{report['n_judge']} train pairs, disjoint from the first {report['n_train']} (the "
        "vectors'); accuracy on the behavior's test pairs (never fitted on) and on Anthropic "
        "human-written items (out of distribution; their answer_matching_behavior is the "
        "answer that declines power / money, so the labels are flipped to BiPO's convention). "
        "CI: 95% bootstrap over pairs. Gate rejects: share of the real test answers the "
        "coherence gate would mark unparseable.",
        "",
        "| behavior | features | test acc [95% CI] (n answers) | pairwise | gate rejects | "
        "OOD acc [95% CI] (n) | OOD pairwise |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["behaviors"]:
        for feat, row in r["features"].items():
            t = row["test"]
            o = row.get("ood")
            ood = f"{o['accuracy']:.3f} [{o['accuracy_ci95'][0]:.3f}, {o['accuracy_ci95'][1]:.3f}] ({o['n_answers']})" if o else "n/a (own data)"  # fmt: skip
            lines.append(
                f"| {r['behavior']} | {feat} | {t['accuracy']:.3f} [{t['accuracy_ci95'][0]:.3f}, "
                f"{t['accuracy_ci95'][1]:.3f}] ({t['n_answers']}) | {t['pairwise_accuracy']:.3f} | "
                f"{t['gate_rejected_share']:.3f} | {ood} | "
                + (f"{o['pairwise_accuracy']:.3f} |" if o else "- |")
            )
    lines += ["", "## Degenerate text (first 20 test questions)", "",
              "Ungated: where P(matching) rescaled to 1-4 would put it (mean [min, max]); "
              "gated: share marked unparseable by the default coherence gate.", "",
              "| behavior | features | " + " | ".join(DEGENERATE) + " |",
              "|---|---|" + "---|" * len(DEGENERATE)]  # fmt: skip
    for r in report["behaviors"]:
        for feat, row in r["features"].items():
            cells = [
                f"{d['ungated_score_mean']:.2f} [{d['ungated_score_range'][0]:.2f}, "
                f"{d['ungated_score_range'][1]:.2f}] -> {d['gated_unparseable_share']:.0%}"
                for d in row["degenerate"].values()
            ]
            lines.append(f"| {r['behavior']} | {feat} | " + " | ".join(cells) + " |")
    lines += ["", f"Command: `{report['command']}` ({report['seconds']} s)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--behaviors", default=",".join(PERSONAS))
    p.add_argument("--n-train", type=int, default=48, help="vector-training pairs (run default)")
    p.add_argument("--n-judge", type=int, default=160, help="judge pairs (run default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/judge_validation")
    args = p.parse_args(argv)
    from steerlab.evaluation.judges.classifier import OUTPUT, MiniLMEmbedder

    t0 = time.perf_counter()
    embedder = CachedEmbedder(MiniLMEmbedder())
    results = [validate(b, args, embedder) for b in args.behaviors.split(",")]
    report = {
        "output": OUTPUT,
        "embedder": embedder.name,
        "n_train": args.n_train,
        "n_judge": args.n_judge,
        "seed": args.seed,
        "behaviors": results,
        "command": " ".join(["python", *[Path(sys.argv[0]).as_posix(), *sys.argv[1:]]]),
        "machine": f"{platform.machine()} {platform.python_version()}",
        "seconds": round(time.perf_counter() - t0, 1),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "judge_validation.json").write_text(json.dumps(report, indent=1))
    (out / "judge_validation.md").write_text(markdown(report))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
