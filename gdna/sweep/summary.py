"""What a sweep prints when it ends: one row per trial (stage, cell, lr, batch, status, val, test) and errors.

status: finished | diverged | stopped (early, by the scheduler; test = its best checkpoint's) | errored |
unfinished (interrupted: `gdna resume` continues it)."""
from __future__ import annotations

from typing import Any

COLUMNS = [("stage", 8), ("arch", 11), ("strategy", 10), ("task", 26), ("lr", 9), ("batch", 5), ("seed", 4),
           ("fold", 4), ("status", 10), ("val", 7), ("test", 7)]
STAGE_ORDER = {"pretrain": 0, "finetune": 1}


def result_row(stage: str, key: str, name: str, trial_dict: dict, meta: dict, metrics: dict, status: str) -> dict[str, Any]:
    row = {**meta, "key": key, "name": name, "lr": trial_dict["train"]["lr"],
           "batch": trial_dict["train"]["batch_size"], "status": status}
    if stage == "finetune":
        row.update(val=metrics.get("best_val_acc", metrics.get("val_acc")), test=metrics.get("test_acc"))
    else:
        row.update(val=metrics.get("best_val_loss", metrics.get("val_loss")),
                   test=metrics.get("best_val_ppl", metrics.get("val_ppl")))
    return row


def format_table(rows: list[dict]) -> str:
    def fmt(v, w):
        if isinstance(v, float):
            v = f"{v:.4g}"
        return f"{'' if v is None else v!s:<{w}.{w}}"

    head = " ".join(f"{c:<{w}}" for c, w in COLUMNS)
    lines = [head, "-" * len(head)]
    for r in sorted(rows, key=lambda r: (STAGE_ORDER.get(r.get("stage"), 2), r.get("arch", ""), r.get("strategy", ""),
                                         r.get("task", ""), r.get("lr", 0), r.get("batch", 0), r.get("seed", 0))):
        lines.append(" ".join(fmt(r.get(c), w) for c, w in COLUMNS))
    lines.append("(val/test: pretrain = best val_loss / val_ppl; finetune = best val_acc / test_acc)")
    return "\n".join(lines)
