"""Great-ape species segments: split by block, bytes equal the FASTA, seeded, balanced."""
from __future__ import annotations

import numpy as np
import pytest

from gdna.data.tasks import collate_cls
from gdna.data.greatapes import greatapes_datasets, load_greatapes, split_blocks
from gdna.data.tokenizer import decode
from gdna.errors import DataError

L = 4000  # long segments: few usable blocks, so the test stays fast


def test_blocks_never_shared_between_splits_and_test_is_fixed():
    tr, va, te = split_blocks(1000, seed=0)
    assert (len(tr), len(va), len(te)) == (810, 90, 100)  # test 10% of all blocks, val 10% of the rest
    assert sorted(np.concatenate([tr, va, te]).tolist()) == list(range(1000))
    tr1, va1, te1 = split_blocks(1000, seed=1)
    assert np.array_equal(te, te1) and not np.array_equal(va, va1)
    assert np.array_equal(va, split_blocks(1000, seed=0)[1])


def test_segments_are_fasta_bytes_labelled_by_sorted_species(data_root):
    apes = load_greatapes(data_root)
    assert apes.species == ("chimpanzee", "gorilla", "human", "orangutan") and len(apes.blocks) == 9627
    train, val, test, n = greatapes_datasets(data_root, L, seed=0)
    assert n == 4
    for ds in (train, val, test):
        assert np.bincount(ds.labels, minlength=4).tolist() == [len(ds) // 4] * 4  # balanced
    blocks = [set(ds.blocks.tolist()) for ds in (train, val, test)]
    assert not (blocks[0] & blocks[1]) and not (blocks[0] & blocks[2]) and not (blocks[1] & blocks[2])
    # independent check: parse human.fa as text and compare a few segments
    text = (data_root / "greatapes" / "human.fa").read_text()
    for i in np.flatnonzero(test.labels == 2)[:5]:
        name = apes.blocks[test.blocks[i]]
        record = text.split(f">{name} ", 1)[1].split(">", 1)[0].split("\n", 1)[1].replace("\n", "")
        s = int(test.starts[i])
        assert decode(test.segments[i]) == record[s : s + L].upper()
    ids, mask, labels = collate_cls([test[i] for i in range(3)])
    assert ids.shape == (3, L) and mask.all() and labels.tolist() == test.labels[:3].tolist()
    # reproducible; the test set does not depend on the seed
    again = greatapes_datasets(data_root, L, seed=0)[0]
    other_train, _, other_test, _ = greatapes_datasets(data_root, L, seed=1)
    assert np.array_equal(again.segments, train.segments)
    assert np.array_equal(other_test.segments, test.segments) and not np.array_equal(other_train.blocks, train.blocks)


def test_missing_folder_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="greatapes: needs at least 2 species"):
        load_greatapes(tmp_path)
