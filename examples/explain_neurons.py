"""Why this neuron? Every neuron's score under every criterion, the decision, and the HTML report.

``explain`` scores the *original* model's neurons under each criterion (one statistics pass) and
reads from the plan which ones were removed; ``write_scores_csv`` writes one row per neuron.
Putting the scores into the report adds a score-distribution figure to ``report.html``.

    python examples/explain_neurons.py --epochs 30 --out explained
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import torch

import neuroprune as npr
from neuroprune.data import load_digits
from neuroprune.analysis.explain import explain
from neuroprune.torch.recover.finetune import finetune
from neuroprune.report.scores_csv import write_scores_csv


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--out", default="explained", help="output folder (report.html, figures/, scores.csv)")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    task = npr.ClassificationTask(load_digits(seed=args.seed), seed=args.seed)
    model = npr.build_model("mlp")
    finetune(model, task, epochs=args.epochs, progress=False)
    result = npr.prune(model, task, npr.PruneConfig(criterion="rank", ratio=args.ratio, tolerance=0.05,
                                                    progress=False, latency_runs=3))

    criteria = ["magnitude", "taylor", "activation_frequency", "rank", "seed"]
    scores, removed = explain(model, task, result.plan, criteria=criteria, progress=False)
    result.report["scores"] = scores  # report.html then shows the score distributions
    result.save(args.out, overwrite=args.overwrite)
    csv_path = Path(args.out) / "scores.csv"
    write_scores_csv(csv_path, scores, removed)

    with open(csv_path, newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["layer"] == "fc1"]
    print(f"fc1: the 5 neurons the rank criterion scores lowest (removed: {len(removed['fc1'])} of {len(rows)})")
    print(f"{'neuron':>6s} {'rank':>6s} {'magnitude':>9s} {'taylor':>9s} {'act.freq':>8s}  decision")
    for row in sorted(rows, key=lambda r: float(r["rank"]))[:5]:
        print(f"{row['neuron']:>6s} {float(row['rank']):6.3f} {float(row['magnitude']):9.4f} "
              f"{float(row['taylor']):9.4f} {float(row['activation_frequency']):8.3f}  {row['decision']}")
    print(f"wrote {csv_path} and {Path(args.out) / 'report.html'}")
    return {"out": Path(args.out), "csv": csv_path, "html": Path(args.out) / "report.html", "scores": scores,
            "removed": removed, "result": result}


if __name__ == "__main__":
    main()
