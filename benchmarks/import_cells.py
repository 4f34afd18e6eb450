"""Copy fair-comparison cells from one store into another under renamed methods.

Used to put the 64-pair grid's vectors beside the full-budget ones in one report, so
every difference between them (same test pairs, same seeds) gets a paired bootstrap CI
from ``fair_comparison.py --report-only``: ``bipo`` of the grid becomes ``bipo_64p``.
Rows of the renamed methods already in the destination are replaced (idempotent).

    python benchmarks/import_cells.py --src benchmarks/results/fair_comparison/cells \\
        --dst benchmarks/results/fair_comparison_full/cells --suffix _64p \\
        --personas power-seeking,wealth-seeking --seeds 0,1,2 --layers 8,12,14,18,22
"""

import argparse
from pathlib import Path

import pandas as pd

#: the per-cell files that hold rows per method (``.done`` and prompting's cells are not
#: copied: the report reads only these, and prompting has no budget to compare)
SUFFIXES = (".test.csv.gz", ".ood.csv.gz", ".kl.csv", ".norms.csv", ".training.csv")


def import_cells(
    src: Path, dst: Path, suffix: str, personas: list[str], seeds: list[int],
    layers: list[int], methods: list[str],
) -> list[Path]:  # fmt: skip
    """Copy the rows of ``methods`` of each (persona, seed, layer) cell; returns the files
    written. A missing source cell is an error (a silent gap would drop a seed)."""
    written = []
    for persona in personas:
        for seed in seeds:
            for layer in layers:
                stem = f"{persona}_s{seed}_L{layer}"
                if not (src / f"{stem}.done").exists():
                    raise SystemExit(f"{src}/{stem}: no such cell")
                for ext in SUFFIXES:
                    path = src / f"{stem}{ext}"
                    if not path.exists():
                        continue
                    rows = pd.read_csv(path)
                    rows = rows[rows["method"].isin(methods)]
                    rows = rows.assign(method=rows["method"] + suffix)
                    out = dst / f"{stem}{ext}"
                    if out.exists():
                        old = pd.read_csv(out)
                        rows = pd.concat([old[~old["method"].isin(set(rows["method"]))], rows])
                    dst.mkdir(parents=True, exist_ok=True)
                    rows.to_csv(out, index=False)
                    written.append(out)
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", required=True)
    ap.add_argument("--dst", required=True)
    ap.add_argument("--suffix", required=True)
    ap.add_argument("--personas", required=True)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--layers", default="8,12,14,18,22")
    ap.add_argument("--methods", default="caa,freeform,pca,bipo,reps")
    a = ap.parse_args()
    written = import_cells(
        Path(a.src), Path(a.dst), a.suffix, a.personas.split(","),
        [int(s) for s in a.seeds.split(",")], [int(x) for x in a.layers.split(",")],
        a.methods.split(","),
    )  # fmt: skip
    print(f"wrote {len(written)} files under {a.dst}")


if __name__ == "__main__":
    main()
