"""CLM corpora: genome windows per epoch, task/domain corpora built from train sequences only."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from gdna.config import DataConfig
from gdna.data import corpora
from gdna.data.genomic_benchmarks import load_task, split_train_val
from gdna.data.tokenizer import PAD_ID, decode
from gdna.errors import ConfigError

COHN, REG = "human_enhancers_cohn", "human_ensembl_regulatory"


def cfg(data_root, **kw) -> DataConfig:
    return DataConfig(data_root=str(data_root), **kw)


def window_texts(ds) -> Counter:
    return Counter(decode(ds[i].numpy()) for i in range(len(ds)))


def expected_chunks(seqs, window: int) -> Counter:
    """Independent re-statement of the chunking rule: consecutive chunks, dropping 1-token tails."""
    return Counter(s[i : i + window].decode() for s in seqs for i in range(0, len(s), window) if len(s[i : i + window]) >= 2)


@pytest.mark.parametrize("corpus, tasks", [("task", (COHN,)), ("domain", (COHN, REG))])
def test_spt_corpora_hold_train_sequences_only(data_root, corpus, tasks):
    c = cfg(data_root, corpus=corpus, task=COHN, domain_tasks=tasks, context_len=299, fold=2)
    train_ds, val_ds = corpora.clm_datasets(c, seed=3)
    want_train, want_val, test_only = Counter(), Counter(), set()
    for name in tasks:
        task = load_task(data_root, name)
        tr, va = split_train_val(task.train.labels, 3, 5, 2, 0.1)
        want_train += expected_chunks([task.train.seqs[i] for i in tr], 300)
        want_val += expected_chunks([task.train.seqs[i] for i in va], 300)
        test_only |= {s.decode() for s in task.test.seqs} - {s.decode() for s in task.train.seqs}
    got_train, got_val = window_texts(train_ds), window_texts(val_ds)
    assert got_train == want_train and got_val == want_val
    first_chunks = {t[:300] for t in test_only}
    assert not first_chunks & (set(got_train) | set(got_val))  # no test sequence anywhere
    assert train_ds[0].shape == (300,) and train_ds[0].dtype == torch.int64


def test_collate_clm_ignores_pad_targets():
    a = torch.tensor([6, 7, 8, 9, 6, 7])  # full window (L+1 = 6)
    b = torch.tensor([6, 7, 8, 0, 0, 0])  # short sequence, right padded
    inputs, targets, mask = corpora.collate_clm([a, b])
    assert inputs.tolist() == [[6, 7, 8, 9, 6], [6, 7, 8, 0, 0]]
    assert targets.tolist() == [[7, 8, 9, 6, 7], [7, 8, -100, -100, -100]]
    assert mask.tolist() == [[True] * 5, [True, True, True, False, False]]
    inputs, targets, mask = corpora.collate_clm([b, b])  # all-pad tail columns trimmed
    assert inputs.tolist() == [[6, 7]] * 2 and targets.tolist() == [[7, 8]] * 2
    assert corpora.collate_clm([b, b], trim=False)[0].shape == (2, 5)


def test_chunk_windows_pads_the_last_chunk():
    w = corpora.chunk_windows([b"ACGTA", b"A", b"ACGTAC"], 3)
    assert [decode(r) for r in w] == ["ACG", "TA", "ACG", "TAC"]
    assert w[1].tolist() == [9, 6, PAD_ID]


def test_genome_corpus_changes_per_epoch_and_is_reproducible(data_root):
    c = cfg(data_root, corpus="genome", context_len=32, windows_per_epoch=64, eval_windows=16)
    train, val = corpora.clm_datasets(c, seed=0)
    again, _ = corpora.clm_datasets(c, seed=0)
    assert len(train) == 64 and len(val) == 16 and train[0].shape == (33,)
    e0 = torch.stack([train[i] for i in range(64)])
    assert torch.equal(e0, torch.stack([again[i] for i in range(64)]))
    train.set_epoch(1)
    e1 = torch.stack([train[i] for i in range(64)])
    assert not torch.equal(e0, e1)
    train.set_epoch(0)
    assert torch.equal(e0, torch.stack([train[i] for i in range(64)]))
    inputs, targets, mask = corpora.collate_clm([val[i] for i in range(4)])
    assert inputs.shape == (4, 32) and mask.all() and (targets != -100).all()
    assert torch.equal(inputs[:, 1:], targets[:, :-1])


def test_corpus_config_errors(data_root):
    with pytest.raises(ConfigError, match="data.task"):
        corpora.clm_datasets(cfg(data_root, corpus="task"), 0)
    with pytest.raises(ConfigError, match="data.domain_tasks"):
        corpora.clm_datasets(cfg(data_root, corpus="domain"), 0)
    c = cfg(data_root, corpus="task", task=COHN, context_len=64, max_train_examples=10, max_eval_examples=5)
    tr, va = corpora.clm_datasets(c, 0)
    assert (len(tr), len(va)) == (10, 5)
    assert np.array_equal(tr[3].numpy(), corpora.clm_datasets(c, 0)[0][3].numpy())
