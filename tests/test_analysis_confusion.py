"""Each fine-tuning trial's test confusion matrix: `evaluate` sums it over ranks, `class_metrics`
turns it into balanced accuracy / MCC / per-class recall (checked against scikit-learn), and the
loop's final report carries them as numeric `test_*` metrics the MLflow callback logs."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, matthews_corrcoef, recall_score
from torch import nn

from gdna.tracking import numeric_metrics
from gdna.train.runtime import LocalRuntime
from gdna.train.steps import class_metrics, evaluate


class FixedPredictions(nn.Module):
    """A 'model' whose logits pick `predictions[i]` for the i-th example it sees (ids hold i)."""

    def __init__(self, predictions, n_classes):
        super().__init__()
        self.predictions = torch.as_tensor(predictions)
        self.n_classes = n_classes
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, ids, mask=None):
        logits = torch.zeros(ids.shape[0], self.n_classes)
        logits[torch.arange(ids.shape[0]), self.predictions[ids[:, 0]]] = 1.0
        return logits


def batches(labels, size=4):
    labels = torch.as_tensor(labels)
    idx = torch.arange(len(labels))
    return [(idx[i:i + size, None], torch.ones(len(idx[i:i + size]), 1, dtype=torch.bool), labels[i:i + size])
            for i in range(0, len(labels), size)]


def test_class_metrics_equal_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    p = np.where(rng.random(200) < 0.6, y, rng.integers(0, 3, 200))
    m = class_metrics(confusion_matrix(y, p, labels=[0, 1, 2]).tolist(), prefix="test_")
    assert m["test_balanced_acc"] == pytest.approx(balanced_accuracy_score(y, p))
    assert m["test_mcc"] == pytest.approx(matthews_corrcoef(y, p))
    for i, r in enumerate(recall_score(y, p, average=None)):
        assert m[f"test_recall_c{i}"] == pytest.approx(r)
    assert m["test_cm_2_1"] == float(((y == 2) & (p == 1)).sum())
    assert m["test_n_pred_classes"] == 3.0


def test_evaluate_gives_the_confusion_matrix_and_one_class_is_half_balanced(tmp_path):
    labels = [0] * 7 + [1] * 3  # majority rate 0.7
    rt = LocalRuntime(tmp_path, device="cpu")
    out = evaluate(FixedPredictions([0] * 10, 2), batches(labels), objective="cls", rt=rt, precision="fp32")
    assert out["acc"] == pytest.approx(0.7)
    assert out["confusion"] == [[7, 0], [3, 0]]
    m = out["classes"]
    assert m["balanced_acc"] == pytest.approx(0.5)  # one predicted class: recalls 1 and 0
    assert m["mcc"] == 0.0 and m["n_pred_classes"] == 1.0
    assert (m["recall_c0"], m["recall_c1"]) == (1.0, 0.0)

    mixed = [0, 0, 0, 0, 0, 1, 1, 1, 1, 0]
    out = evaluate(FixedPredictions(mixed, 2), batches(labels), objective="cls", rt=rt, precision="fp32")
    assert out["confusion"] == [[5, 2], [1, 2]]
    assert out["classes"]["balanced_acc"] == pytest.approx(balanced_accuracy_score(labels, mixed))


def test_confusion_metrics_pass_the_tracking_filter():
    """The driver's MLflow callback logs every numeric test_* key of the final report."""
    report = {"test_acc": 0.7, "status": "finished", "final": True,
              **{f"test_{k}": v for k, v in class_metrics([[7, 0], [3, 0]]).items()}}
    logged = numeric_metrics(report)
    assert {"test_balanced_acc", "test_mcc", "test_recall_c0", "test_recall_c1", "test_cm_0_0", "test_cm_1_0",
            "test_n_pred_classes"} <= set(logged)
    assert "status" not in logged and "final" not in logged
    assert all(isinstance(v, float) for v in logged.values())


def test_the_loop_reports_test_confusion_metrics(data_root, tmp_path):
    from gdna.config import DataConfig, ModelConfig, TrainConfig, TrialConfig
    from gdna.train.loop import run

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trial = TrialConfig(
            model=ModelConfig(arch="transformer", d_model=32),
            data=DataConfig(data_root=str(data_root), task="human_enhancers_cohn", max_len=64,
                            max_train_examples=64, max_eval_examples=48),
            train=TrainConfig(objective="cls", lr=3e-3, batch_size=32, epochs=1, seed=0)).validate()
        rt = LocalRuntime(tmp_path, device="cpu")
        final = run({"trial": trial.to_dict()}, rt)
    finally:
        torch.set_num_threads(n)
    cm = np.array([[final["test_cm_0_0"], final["test_cm_0_1"]], [final["test_cm_1_0"], final["test_cm_1_1"]]])
    assert cm.sum() == 48  # every test example once
    assert final["test_acc"] == pytest.approx(np.trace(cm) / 48)
    assert math.isfinite(final["test_balanced_acc"]) and -1 <= final["test_mcc"] <= 1
    assert rt.reports[-1]["test_balanced_acc"] == final["test_balanced_acc"]
