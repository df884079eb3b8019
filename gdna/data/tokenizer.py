"""Character tokenizer for DNA: A C G T N (lower case folded) plus special tokens.

Encoding is vectorized with a 256-entry numpy lookup table: no per-character Python loop.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from gdna.errors import DataError

SPECIALS = ("[PAD]", "[CLS]", "[BOS]", "[EOS]", "[MASK]", "[UNK]")
BASES = ("A", "C", "G", "T", "N")
PAD_ID, CLS_ID, BOS_ID, EOS_ID, MASK_ID, UNK_ID = range(len(SPECIALS))
BASE_IDS = {b: len(SPECIALS) + i for i, b in enumerate(BASES)}  # A=6 C=7 G=8 T=9 N=10
N_ID = BASE_IDS["N"]
VOCAB = SPECIALS + BASES
VOCAB_SIZE = 16  # 11 used ids, padded to 16 for friendlier embedding/LM-head shapes

INVALID = 255  # marker in BYTE_TO_ID for bytes that are not A/C/G/T/N
BYTE_TO_ID = np.full(256, INVALID, dtype=np.uint8)  # byte value -> token id (uint8)
for _base, _id in BASE_IDS.items():
    BYTE_TO_ID[ord(_base)] = _id
    BYTE_TO_ID[ord(_base.lower())] = _id
BYTE_TO_ID.flags.writeable = False
_LUT, _INVALID = BYTE_TO_ID, INVALID


def encode_bytes(seq: bytes | str, *, source: str = "sequence", unknown: str = "error") -> np.ndarray:
    """One sequence → int64 ids (L,). unknown='error' raises DataError naming `source`; 'unk' maps to UNK."""
    raw = seq.encode("ascii", "replace") if isinstance(seq, str) else seq
    ids = _LUT[np.frombuffer(raw, dtype=np.uint8)]
    bad = ids == _INVALID
    if bad.any():
        if unknown == "error":
            pos = int(np.argmax(bad))
            raise DataError(f"{source}: invalid character {chr(raw[pos])!r} at position {pos} (expected A/C/G/T/N)")
        ids = np.where(bad, UNK_ID, ids)
    return ids.astype(np.int64)


def decode(ids: Sequence[int] | np.ndarray) -> str:
    """ids → string; special tokens are dropped."""
    return "".join(VOCAB[i] for i in np.asarray(ids).tolist() if i >= len(SPECIALS) and i < len(VOCAB))


def encode_batch(
    seqs: Sequence[bytes | str],
    max_len: int | None = None,
    *,
    padding_side: str = "right",
    truncation_side: str = "right",
    add_cls: bool = False,
    add_bos: bool = False,
    add_eos: bool = False,
    pad_to_multiple_of: int = 1,
    unknown: str = "error",
    sources: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Many sequences → (ids (B, L) int64, attention_mask (B, L) bool), L = longest (≤ max_len).

    Sequences are concatenated into one byte buffer and mapped through the lookup table in a single
    numpy call; specials and padding are placed with array indexing, never per character.
    Truncation keeps `max_len` tokens in total (specials included); `sources[i]` names sequence i in errors.
    """
    if padding_side not in ("left", "right") or truncation_side not in ("left", "right"):
        raise ValueError("padding_side and truncation_side must be 'left' or 'right'")
    if unknown not in ("error", "unk"):
        raise ValueError("unknown must be 'error' or 'unk'")
    raws = [s.encode("ascii", "replace") if isinstance(s, str) else bytes(s) for s in seqs]
    n_special = int(add_cls) + int(add_bos) + int(add_eos)
    body_cap = None if max_len is None else max_len - n_special
    if body_cap is not None and body_cap <= 0:
        raise ValueError(f"max_len={max_len} leaves no room for sequence tokens")
    lengths = np.fromiter((len(r) for r in raws), dtype=np.int64, count=len(raws))
    buf = np.frombuffer(b"".join(raws), dtype=np.uint8)
    flat = _LUT[buf]
    bad = flat == _INVALID
    if bad.any():
        if unknown == "error":
            pos = int(np.argmax(bad))
            owner = int(np.searchsorted(np.cumsum(lengths), pos, side="right"))
            name = sources[owner] if sources is not None else f"sequence {owner}"
            raise DataError(
                f"{name}: invalid character {chr(int(buf[pos]))!r} "
                f"at position {pos - int(lengths[:owner].sum())} (expected A/C/G/T/N)"
            )
        flat = np.where(bad, UNK_ID, flat)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(raws) else np.zeros(0, np.int64)
    body = lengths if body_cap is None else np.minimum(lengths, body_cap)
    # which part of each sequence is kept
    src_start = starts + (lengths - body if truncation_side == "left" else 0)
    total = body + n_special
    L = int(total.max()) if len(raws) else 0
    L = -(-L // pad_to_multiple_of) * pad_to_multiple_of
    B = len(raws)
    ids = np.full((B, L), PAD_ID, dtype=np.int64)
    # offset of each row's first token (left padding shifts it right)
    row_off = (L - total) if padding_side == "left" else np.zeros(B, np.int64)
    prefix = [t for t, on in ((CLS_ID, add_cls), (BOS_ID, add_bos)) if on]
    rows = np.arange(B)
    for j, tok in enumerate(prefix):
        ids[rows, row_off + j] = tok
    # scatter bodies: one flat index computation for all sequences
    rep_rows = np.repeat(rows, body)
    within = np.arange(int(body.sum())) - np.repeat(np.cumsum(body) - body, body)
    ids[rep_rows, np.repeat(row_off + len(prefix), body) + within] = flat[np.repeat(src_start, body) + within]
    if add_eos:
        ids[rows, row_off + len(prefix) + body] = EOS_ID
    cols = np.arange(L)[None, :]
    mask = (cols >= row_off[:, None]) & (cols < (row_off + total)[:, None])
    return ids, mask
