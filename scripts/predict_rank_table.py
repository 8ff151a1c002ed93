"""Markdown rows of docs/capacity.md's rank-predictor validation table from `lorank predict-rank
--validate --json` outputs.

    python scripts/predict_rank_table.py sst2.json qnli.json ...

One row per file: task (head), checkpoint, predicted rank (and per seed), the measured best rank
(best mean test accuracy), accuracy at the predicted and at the best rank (mean ± std over seeds),
the gap, how many (rank, seed) cells kept ΔW = 0 (dev-selected step 0), the seed-averaged bound
and the mean test accuracy per rank.
"""

from __future__ import annotations

import json
import sys


def row(path: str) -> str:
    with open(path) as fh:
        d = json.load(fh)
    cfg, table = d["config"], {t["rank"]: t for t in d["table"]}
    seeds = cfg["seeds"]
    per_seed = "/".join(str(d["per_seed_predictions"][str(s)]) for s in seeds)
    pred, best = d["predicted_rank"], d["measured_best_rank"]
    acc = {r: table[r]["test_accuracy"] for r in table}
    zero = sum(1 for b in d["bounds"] if b["step"] == 0)
    ranks = sorted(table)
    return (f"| {cfg['task']} ({cfg['head']}) | {cfg['checkpoint']} | {pred} ({per_seed}) | {best} "
            f"| {acc[pred][0]:.4f} ± {acc[pred][1]:.4f} | {acc[best][0]:.4f} ± {acc[best][1]:.4f} "
            f"| {acc[best][0] - acc[pred][0]:.4f} ({acc[best][1]:.4f}) "
            f"| {zero} (of {len(d['bounds'])}) "
            f"| {' / '.join(format(table[r]['bound'][0], '.2f') for r in ranks)} "
            f"| {' / '.join(format(acc[r][0], '.3f') for r in ranks)} |")


if __name__ == "__main__":
    for p in sys.argv[1:]:
        print(row(p))
