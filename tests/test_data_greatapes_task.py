"""`greatapes` as a task: fine-tuning datasets by fold, its self-pretraining corpus, the sweep's data check,
and a fine-tuning run through the training loop."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from gdna.config import DataConfig, ModelConfig, TrainConfig, TrialConfig
from gdna.data import greatapes
from gdna.data.corpora import clm_datasets
from gdna.data.tasks import task_clm_sequences
from gdna.data.tasks import classification_datasets
from gdna.errors import ConfigError
from gdna.sweep.spec import spec_from_dict
from gdna.train.loop import run
from gdna.train.runtime import LocalRuntime


def apes_cfg(data_root, **kw) -> DataConfig:
    d = dict(data_root=str(data_root), task="greatapes", max_len=64, n_folds=5, fold=0)
    d.update(kw)
    return DataConfig(**d)


def test_folds_partition_the_non_test_blocks_and_test_is_fixed():
    splits = [greatapes.split_blocks(500, seed=3, n_folds=5, fold=f) for f in range(5)]
    test = splits[0][2]
    assert all(np.array_equal(s[2], test) for s in splits) and len(test) == 50
    vals = np.concatenate([s[1] for s in splits])
    assert sorted(vals.tolist()) == sorted(set(range(500)) - set(test.tolist()))  # each block val exactly once
    for tr, va, te in splits:
        assert not set(tr) & set(va) and not set(tr) & set(te) and len(tr) + len(va) + len(te) == 500


def test_classification_datasets_for_greatapes(data_root):
    train, val, test, n = classification_datasets(apes_cfg(data_root, max_train_examples=120, max_eval_examples=40), 0)
    assert n == 4 and (len(train), len(val), len(test)) == (120, 40, 40)
    ids, mask, label = train[0]
    assert ids.shape == (64,) and mask.all() and 0 <= label < 4
    assert not set(train.blocks) & set(val.blocks) and not set(train.blocks) & set(test.blocks)
    # another fold validates on other blocks; the length defaults to context_len without max_len
    _, val1, _, _ = classification_datasets(apes_cfg(data_root, fold=1, max_eval_examples=40), 0)
    assert not set(val.blocks) & set(val1.blocks)
    tr2, _, _, _ = classification_datasets(apes_cfg(data_root, max_len=None, context_len=96, max_train_examples=8), 0)
    assert tr2[0][0].shape == (96,)


def test_self_pretraining_corpus_is_the_train_blocks_only(data_root):
    cfg = apes_cfg(data_root, corpus="task", context_len=128)
    apes = greatapes.load_greatapes(data_root)
    tr_b, va_b, te_b = greatapes.split_blocks(len(apes.blocks), 0, 5, 0, 0.1)
    train_seqs, val_seqs = task_clm_sequences(cfg, "greatapes", 0)
    assert len(train_seqs) == 4 * len(tr_b) and len(val_seqs) == 4 * len(va_b)
    # species-major, blocks in order: the first sequence is the first train block of the first species,
    # upper-cased (the FASTA keeps soft-masked repeats in lower case), read back independently as text
    name = apes.blocks[tr_b[0]]
    text = (data_root / "greatapes" / f"{apes.species[0]}.fa").read_text()
    record = text.split(f">{name} ", 1)[1].split(">", 1)[0].split("\n", 1)[1].replace("\n", "")
    assert train_seqs[0] == record.upper().encode()
    total = sum(int(apes.lengths[s, b]) for s in range(4) for b in tr_b)
    assert sum(map(len, train_seqs)) == total
    train_ds, val_ds = clm_datasets(dataclasses.replace(cfg, max_train_examples=50, max_eval_examples=10), 0)
    assert len(train_ds) == 50 and train_ds[0].shape == (129,)


def test_sweep_accepts_greatapes_and_names_a_missing_folder(data_root, tmp_path):
    spec = {"name": "apes", "tasks": ["greatapes"], "architectures": ["mamba"], "strategies": ["scratch", "task_spt"],
            "search_space": "smoke", "data_root": str(data_root), "storage": str(tmp_path / "runs")}
    from gdna.sweep.plan import build_plan

    plan = build_plan(spec_from_dict(dict(spec)))
    assert {plan.finetune_trial(c, {}, None)[0].model.n_classes for c in plan.cells} == {4}  # analysis: chance 1/4
    (tmp_path / "empty" / "greatapes").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"tasks\[0\]: greatapes needs at least 2 species FASTA"):
        spec_from_dict({**spec, "data_root": str(tmp_path / "empty")})


def test_fine_tuning_on_greatapes_through_the_loop(data_root, tmp_path):
    torch.set_num_threads(1)
    trial = TrialConfig(
        model=ModelConfig(arch="hyena", d_model=16),
        data=apes_cfg(data_root, max_train_examples=64, max_eval_examples=32),
        train=TrainConfig(objective="cls", lr=3e-3, batch_size=32, epochs=1, seed=0),
    ).validate()
    final = run({"trial": trial.to_dict()}, LocalRuntime(tmp_path / "run"))
    assert final["status"] == "finished" and 0.0 <= final["test_acc"] <= 1.0
