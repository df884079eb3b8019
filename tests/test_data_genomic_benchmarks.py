"""Genomic Benchmarks loader on the real shared tasks, plus small broken copies in tmp_path."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from gdna.config import DataConfig
from gdna.data import genomic_benchmarks as gb
from gdna.data.tasks import collate_cls
from gdna.data.tokenizer import PAD_ID
from gdna.errors import DataError

REG = "human_ensembl_regulatory"


def _count_files(d: Path) -> int:
    return sum(1 for n in os.listdir(d) if n.endswith(".txt"))


def test_regulatory_counts_match_the_readme_and_the_files(data_root):
    t0 = time.perf_counter()
    task = gb.load_task(data_root, REG, cache=False)
    elapsed = time.perf_counter() - t0
    assert elapsed < 2.0, f"loading {REG} took {elapsed:.2f}s"
    assert task.classes == ("enhancer", "ocr", "promoter")
    assert (len(task.train), len(task.test)) == (5499, 1373)  # README table
    for split_name, split in (("train", task.train), ("test", task.test)):
        counts = np.bincount(split.labels, minlength=3)
        want = [_count_files(data_root / "genomic_benchmarks" / REG / split_name / c) for c in task.classes]
        assert counts.tolist() == want
    assert np.bincount(task.train.labels).tolist() == [1901, 1625, 1973]
    assert task.max_len == 802
    assert task.train.lengths.min() == 86
    # an example's bytes are its file's bytes
    seq, label = task.test[17]
    assert Path(task.test.files[17]).read_bytes().strip() == seq
    assert Path(task.test.files[17]).parent.name == task.classes[label]


def test_labels_do_not_depend_on_directory_listing_order(data_root, monkeypatch):
    normal = gb.load_task(data_root, "human_enhancers_cohn", cache=False)
    real_scandir = os.scandir
    monkeypatch.setattr(os, "scandir", lambda p=".": iter(sorted(real_scandir(p), key=lambda e: e.name, reverse=True)))
    assert [e.name for e in os.scandir(data_root / "genomic_benchmarks")][0] == "human_ocr_ensembl"
    shuffled = gb.load_task(data_root, "human_enhancers_cohn", cache=False)
    assert shuffled.classes == normal.classes
    assert shuffled.train.seqs == normal.train.seqs and shuffled.train.files == normal.train.files
    assert shuffled.train.labels.tolist() == normal.train.labels.tolist()


def _write_task(root: Path, task: str, layout: dict[str, dict[str, list[str]]]) -> Path:
    """layout: {split: {class: [sequences]}}, written in the given (deliberately unsorted) order."""
    for split, classes in layout.items():
        for cls, seqs in classes.items():
            d = root / "genomic_benchmarks" / task / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i, s in reversed(list(enumerate(seqs))):
                (d / f"{split}_{cls}_{i:03d}.txt").write_text(s)
    return root / "genomic_benchmarks" / task


def test_class_ids_come_from_sorted_names_not_creation_order(tmp_path):
    layout = {s: {"zeta": ["AAAA", "AAAC"], "alpha": ["CCCC"], "mid": ["GGGG", "GGGT", "GGTT"]} for s in ("train", "test")}
    _write_task(tmp_path, "toy", layout)
    task = gb.load_task(tmp_path, "toy", cache=False)
    assert task.classes == ("alpha", "mid", "zeta")
    assert [(s.decode(), lab) for s, lab in task.train] == [
        ("CCCC", 0), ("GGGG", 1), ("GGGT", 1), ("GGTT", 1), ("AAAA", 2), ("AAAC", 2)]


@pytest.mark.parametrize("labels", [False, True])
def test_folds_partition_train_and_depend_on_seed(labels):
    y = np.repeat([0, 1, 2], [50, 31, 19])
    arg = y if labels else len(y)
    vals = []
    for fold in range(5):
        tr, va = gb.split_train_val(arg, seed=3, n_folds=5, fold=fold)
        assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(y)
        vals.append(va)
    allv = np.concatenate(vals)
    assert sorted(allv.tolist()) == list(range(len(y)))  # disjoint and covering
    same = gb.split_train_val(arg, seed=3, n_folds=5, fold=2)[1]
    other = gb.split_train_val(arg, seed=4, n_folds=5, fold=2)[1]
    assert same.tolist() == vals[2].tolist() and other.tolist() != same.tolist()
    if labels:  # stratified: every fold holds about a fifth of each class
        for va in vals:
            assert np.abs(np.bincount(y[va], minlength=3) - np.array([10, 6.2, 3.8])).max() <= 1


def test_single_fold_uses_val_fraction():
    tr, va = gb.split_train_val(200, seed=0, n_folds=1, fold=0, val_fraction=0.25)
    assert len(va) == 50 and len(tr) == 150


def test_classification_datasets_shapes_subsampling_and_collate(data_root):
    cfg = DataConfig(data_root=str(data_root), task=REG, max_len=300, max_train_examples=64, max_eval_examples=40)
    train, val, test, n_classes = gb.classification_datasets(cfg, seed=1)
    assert n_classes == 3 and (len(train), len(val), len(test)) == (64, 40, 40)
    ids, mask, label = train[0]
    assert ids.dtype == torch.int64 and mask.dtype == torch.bool and len(ids) <= 300 and isinstance(label, int)
    batch = collate_cls([train[i] for i in range(8)])
    ids, mask, labels = batch
    assert ids.shape == mask.shape and ids.shape[0] == 8 and labels.shape == (8,)
    assert ids.shape[1] == max(len(train[i][0]) for i in range(8))
    assert (ids[~mask] == PAD_ID).all() and (ids[mask] != PAD_ID).all()
    assert mask[:, 0].all()  # right padded: every row starts with real tokens
    # deterministic from the seed, and the train/val parts never overlap
    again = gb.classification_datasets(cfg, seed=1)[0]
    assert all(torch.equal(train[i][0], again[i][0]) for i in range(64))
    full = DataConfig(data_root=str(data_root), task=REG)
    tr, va, te, _ = gb.classification_datasets(full, seed=0)
    task = gb.load_task(data_root, REG)
    assert len(tr) + len(va) == len(task.train) and len(te) == len(task.test)
    assert len(va) in (len(task.train) // 5, len(task.train) // 5 + 1, len(task.train) // 5 + 2)
    assert max(len(te[i][0]) for i in range(len(te))) == task.max_len  # no max_len: the task's longest


def test_missing_task_folder(tmp_path):
    (tmp_path / "genomic_benchmarks").mkdir()
    with pytest.raises(DataError, match=r"genomic_benchmarks/nope: task folder not found") as e:
        gb.load_task(tmp_path, "nope", cache=False)
    assert "\n" not in str(e.value)


def test_empty_class_folder(tmp_path):
    path = _write_task(tmp_path, "t", {s: {"a": ["ACGT"], "b": ["ACGT"]} for s in ("train", "test")})
    for f in (path / "test" / "b").iterdir():
        f.unlink()
    with pytest.raises(DataError, match=r"t/test/b: class folder has no"):
        gb.load_task(tmp_path, "t", cache=False)


def test_class_sets_differ_between_train_and_test(tmp_path):
    _write_task(tmp_path, "t", {"train": {"a": ["ACGT"], "b": ["ACGT"]}, "test": {"a": ["ACGT"], "c": ["ACGT"]}})
    with pytest.raises(DataError, match=r"/t: class folders differ between train \(a, b\) and test \(a, c\)"):
        gb.load_task(tmp_path, "t", cache=False)


def test_invalid_character_names_the_file(tmp_path):
    _write_task(tmp_path, "t", {"train": {"a": ["ACGT", "ACGT"], "b": ["AC-T"]}, "test": {"a": ["A"], "b": ["C"]}})
    with pytest.raises(DataError, match=r"t/train/b/train_b_000\.txt: invalid character '-' at position 2") as e:
        gb.load_task(tmp_path, "t", cache=False)
    assert "\n" not in str(e.value)
