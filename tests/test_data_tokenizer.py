"""Character tokenizer: ids, specials, padding/truncation sides, attention mask, invalid characters."""
from __future__ import annotations

import numpy as np
import pytest

from gdna.data import tokenizer as tok
from gdna.errors import DataError


def test_vocabulary_ids_match_the_design_contract():
    assert (tok.PAD_ID, tok.CLS_ID, tok.BOS_ID, tok.EOS_ID, tok.MASK_ID, tok.UNK_ID) == (0, 1, 2, 3, 4, 5)
    assert [tok.BASE_IDS[b] for b in "ACGTN"] == [6, 7, 8, 9, 10]
    assert tok.VOCAB_SIZE == 16 and len(tok.VOCAB) <= tok.VOCAB_SIZE


def test_encode_bytes_folds_lower_case_and_round_trips():
    ids = tok.encode_bytes(b"acgtnACGTN")
    assert ids.dtype == np.int64
    assert ids.tolist() == [6, 7, 8, 9, 10] * 2
    assert tok.decode(ids) == "ACGTNACGTN"
    assert tok.encode_bytes("GATTACA").tolist() == tok.encode_bytes(b"GATTACA").tolist()


def test_right_padding_and_mask():
    ids, mask = tok.encode_batch([b"ACG", b"A", b"ACGTN"])
    assert ids.shape == (3, 5) and ids.dtype == np.int64 and mask.dtype == bool
    assert ids[1].tolist() == [6, 0, 0, 0, 0]
    assert mask.sum(1).tolist() == [3, 1, 5]
    assert not mask[0, 3:].any() and mask[0, :3].all()


def test_left_padding_puts_tokens_at_the_end():
    ids, mask = tok.encode_batch([b"ACG", b"A"], padding_side="left")
    assert ids.tolist() == [[6, 7, 8], [0, 0, 6]]
    assert mask.tolist() == [[True, True, True], [False, False, True]]


def test_truncation_sides_and_specials_count_towards_max_len():
    ids, mask = tok.encode_batch([b"ACGTACGT"], max_len=4)
    assert tok.decode(ids[0]) == "ACGT"
    ids, _ = tok.encode_batch([b"ACGTACGA"], max_len=4, truncation_side="left")
    assert tok.decode(ids[0]) == "ACGA"
    ids, mask = tok.encode_batch([b"ACGTACGT", b"C"], max_len=5, add_cls=True, add_eos=True)
    assert ids[0].tolist() == [tok.CLS_ID, 6, 7, 8, tok.EOS_ID]
    assert ids[1].tolist() == [tok.CLS_ID, 7, tok.EOS_ID, 0, 0]
    assert mask[1].tolist() == [True, True, True, False, False]
    ids, mask = tok.encode_batch([b"AC"], add_bos=True, padding_side="left", pad_to_multiple_of=4)
    assert ids[0].tolist() == [0, tok.BOS_ID, 6, 7] and mask[0].tolist() == [False, True, True, True]


def test_batch_matches_one_by_one_encoding_on_random_sequences():
    rng = np.random.default_rng(0)
    seqs = [rng.choice(np.frombuffer(b"ACGTNacgtn", np.uint8), size=int(n)).tobytes() for n in rng.integers(1, 50, size=40)]
    ids, mask = tok.encode_batch(seqs, max_len=30)
    for row, s in enumerate(seqs):
        want = tok.encode_bytes(s)[:30]
        assert ids[row, : len(want)].tolist() == want.tolist()
        assert mask[row].sum() == len(want)


def test_invalid_character_raises_data_error_naming_the_source():
    with pytest.raises(DataError, match=r"x\.txt: invalid character 'X' at position 2"):
        tok.encode_bytes(b"ACXT", source="x.txt")
    with pytest.raises(DataError, match=r"b\.txt: invalid character '-' at position 1"):
        tok.encode_batch([b"ACGT", b"A-GT"], sources=["a.txt", "b.txt"])
    with pytest.raises(DataError, match=r"sequence 1:"):
        tok.encode_batch([b"ACGT", b"AR"])
    ids, _ = tok.encode_batch([b"AR"], unknown="unk")
    assert ids[0].tolist() == [6, tok.UNK_ID]
