"""One optimizer step (micro-batch accumulation, autocast, GradScaler, clipping) and evaluation.

Loss normalisation makes the update independent of the worker count: every micro-batch's loss is a
SUM divided by the global batch's example count (cls) or target-token count (clm), times world_size
(DDP averages gradients over ranks). So 1 worker × 4 micro-batches == 2 workers × 2 == 4 × 1.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gdna.train.runtime import Runtime

PAD_ID = 0  # gdna.data.tokenizer.PAD_ID
IGNORE = -100


def autocast(device: torch.device, precision: str):
    """bf16 / fp16 autocast on CUDA only; CPU (and fp32) run in full precision."""
    if device.type != "cuda" or precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def unpack_cls(batch: Any) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    if isinstance(batch, dict):
        return batch["ids"], batch.get("mask"), batch["labels"]
    ids, mask, labels = batch
    return ids, mask, torch.as_tensor(labels)


def unpack_clm(batch: Any) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """(input ids, mask, targets). Accepts `gdna.data.corpora.collate_clm` output (inputs, targets, mask)
    or raw windows (B, L+1): input [:-1], target [1:], PAD targets ignored."""
    if isinstance(batch, (tuple, list)):
        inputs, targets, mask = batch
        return inputs, mask, targets
    ids = batch
    inp, tgt = ids[:, :-1], ids[:, 1:].clone()
    tgt[tgt == PAD_ID] = IGNORE
    return inp, inp != PAD_ID, tgt


def batch_count(objective: str, batch: Any) -> int:
    """What the loss is normalised by: examples (cls) or target tokens (clm)."""
    if objective == "cls":
        return int(unpack_cls(batch)[0].shape[0])
    return int((unpack_clm(batch)[2] != IGNORE).sum())


def batch_tokens(objective: str, batch: Any) -> int:
    """Input tokens (for throughput)."""
    ids, mask, _ = unpack_cls(batch) if objective == "cls" else unpack_clm(batch)
    return int(mask.sum()) if mask is not None else ids.numel()


def loss_sum(model: nn.Module, objective: str, batch: Any, device: torch.device, precision: str) -> tuple[torch.Tensor, int]:
    """Summed loss over the batch (fp32) and the number of correct predictions (cls; 0 for clm)."""
    loss, correct, _ = _loss_and_predictions(model, objective, batch, device, precision)
    return loss, correct


def _loss_and_predictions(
    model: nn.Module, objective: str, batch: Any, device: torch.device, precision: str
) -> tuple[torch.Tensor, int, tuple[torch.Tensor, torch.Tensor, int] | None]:
    """loss_sum's (loss, correct), plus (labels, predictions, n_classes) for cls (None for clm)."""
    if objective == "cls":
        ids, mask, labels = unpack_cls(batch)
    else:
        ids, mask, labels = unpack_clm(batch)
    ids = ids.to(device, non_blocking=True)
    mask = mask.to(device, non_blocking=True) if mask is not None else None
    labels = labels.to(device, non_blocking=True)
    with autocast(device, precision):
        logits = model(ids, mask)
    logits = logits.float()
    if objective == "cls":
        loss = F.cross_entropy(logits, labels, reduction="sum")
        predictions = logits.argmax(-1)
        correct = int((predictions == labels).sum())
        return loss, correct, (labels, predictions, int(logits.shape[-1]))
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE, reduction="sum")
    return loss, 0, None


def train_step(
    model: nn.Module,
    micro_batches: list[Any],
    *,
    objective: str,
    global_count: int,
    rt: Runtime,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    grad_clip: float,
    precision: str,
) -> tuple[float, bool]:
    """One optimizer step over this rank's micro-batches. Returns (global mean loss, diverged).

    `diverged` is all-reduced, so every rank takes the same decision (no rank is left in a collective).
    """
    optimizer.zero_grad(set_to_none=True)
    scale = rt.world_size / max(1, global_count)
    local_sum = 0.0
    for i, mb in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        sync = contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            loss, _ = loss_sum(model, objective, mb, rt.device, precision)
            scaler.scale(loss * scale).backward()
        local_sum += float(loss.detach())
    flag = torch.tensor([0.0 if math.isfinite(local_sum) else 1.0, local_sum if math.isfinite(local_sum) else 0.0], dtype=torch.float64)
    flag = rt.all_reduce_sum(_to_comm(flag, rt)).cpu()
    diverged = bool(flag[0] > 0)
    if diverged:
        optimizer.zero_grad(set_to_none=True)
        return float("nan"), True
    if grad_clip and grad_clip > 0:
        scaler.unscale_(optimizer)
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        if not torch.isfinite(norm) and not scaler.is_enabled():
            # gradients are identical on every rank after DDP's all-reduce: the same decision everywhere
            optimizer.zero_grad(set_to_none=True)
            return float("nan"), True
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    return float(flag[1]) / max(1, global_count), False


def _to_comm(t: torch.Tensor, rt: Runtime) -> torch.Tensor:
    # gloo reduces CPU tensors; nccl needs them on the GPU
    return t if rt.device.type == "cpu" else t.to(rt.device)


def perplexity(loss: float) -> float:
    if not math.isfinite(loss):
        return float("nan")
    return math.exp(loss) if loss < 700 else float("inf")


@torch.no_grad()
def evaluate(
    model: nn.Module, batches: Iterable[Any], *, objective: str, rt: Runtime, precision: str
) -> dict[str, Any]:
    """Loss (and accuracy for cls) over this rank's shard, summed over ranks.

    cls also gives `confusion`: the (n_classes, n_classes) confusion matrix as nested lists of
    counts, rows = true class, columns = predicted class, summed over ranks like the other sums, and
    `classes`: `class_metrics(confusion)` (balanced accuracy, MCC, per-class recall, the counts).
    """
    was_training = model.training
    model.eval()
    tot = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, count
    cm: torch.Tensor | None = None
    for b in batches:
        loss, correct, preds = _loss_and_predictions(model, objective, b, rt.device, precision)
        tot += torch.tensor([float(loss), correct, batch_count(objective, b)], dtype=torch.float64)
        if preds is not None:
            labels, predicted, n_classes = preds
            counts = torch.bincount((labels * n_classes + predicted).cpu(), minlength=n_classes * n_classes)
            cm = counts.to(torch.float64) if cm is None else cm + counts.to(torch.float64)
    t = _to_comm(tot, rt)
    rt.all_reduce_sum(t)
    tot = t.cpu()
    if objective == "cls":
        cm = _all_reduce_confusion(cm, rt)
    model.train(was_training)
    n = max(1.0, float(tot[2]))
    out: dict[str, Any] = {"loss": float(tot[0]) / n, "count": float(tot[2])}
    if objective == "cls":
        out["acc"] = float(tot[1]) / n
        if cm is not None:
            k = int(round(math.sqrt(cm.numel())))
            out["confusion"] = cm.reshape(k, k).round().to(torch.int64).tolist()
            out["classes"] = class_metrics(out["confusion"])
    else:
        out["ppl"] = perplexity(out["loss"])
    return out


def _all_reduce_confusion(cm: torch.Tensor | None, rt: Runtime) -> torch.Tensor | None:
    """Sum the flattened confusion matrices over ranks. A rank without examples does not know the
    class count, so the ranks first agree on it (sum of counts over the ranks that have one)."""
    if rt.world_size == 1:
        return cm
    k2 = 0 if cm is None else cm.numel()
    agree = rt.all_reduce_sum(_to_comm(torch.tensor([float(k2), float(cm is not None)], dtype=torch.float64), rt)).cpu()
    if agree[1] == 0:
        return None
    size = int(round(float(agree[0]) / float(agree[1])))
    local = torch.zeros(size, dtype=torch.float64) if cm is None else cm
    return rt.all_reduce_sum(_to_comm(local, rt)).cpu()


def class_metrics(confusion: Sequence[Sequence[float]] | None, prefix: str = "") -> dict[str, float]:
    """Numbers from a confusion matrix (rows true, columns predicted), all plain floats:
    `balanced_acc` (mean recall over the classes present), `mcc` (multi-class Matthews correlation,
    0 when undefined: one predicted class), `recall_c{i}` (NaN for a class absent from the labels),
    `pred_frac_c{i}` (share of predictions), `n_pred_classes` (classes predicted at least once) and
    `cm_{i}_{j}` (counts). Empty for None (clm, or no example)."""
    if confusion is None:
        return {}
    cm = np.asarray(confusion, dtype=np.float64)
    k = cm.shape[0]
    n = cm.sum()
    true, pred = cm.sum(axis=1), cm.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(true > 0, np.diag(cm) / np.where(true > 0, true, 1), np.nan)
    present = true > 0
    out = {"balanced_acc": float(recall[present].mean()) if present.any() else float("nan")}
    # Gorodkin's R_K (= sklearn.metrics.matthews_corrcoef on the same predictions)
    c, s = float(np.trace(cm)), float(n)
    denom = math.sqrt(max(s * s - float(pred @ pred), 0.0)) * math.sqrt(max(s * s - float(true @ true), 0.0))
    out["mcc"] = (c * s - float(pred @ true)) / denom if denom > 0 else 0.0
    out["n_pred_classes"] = float((pred > 0).sum())
    for i in range(k):
        out[f"recall_c{i}"] = float(recall[i])
        out[f"pred_frac_c{i}"] = float(pred[i] / n) if n > 0 else float("nan")
    for i in range(k):
        for j in range(k):
            out[f"cm_{i}_{j}"] = float(cm[i, j])
    return {prefix + key: v for key, v in out.items()}
