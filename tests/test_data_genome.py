"""Genome windows: coordinates, bytes (checked against an independent plain FASTA parse), seeding, errors."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from gdna.data.genome import FastaReader, GenomeWindows, read_bed
from gdna.data.tokenizer import N_ID, decode
from gdna.errors import DataError


def parse_fasta(path: Path) -> dict[str, bytes]:
    """Independent reference reader: whole file, records split on '>' and newlines removed."""
    out = {}
    for rec in path.read_bytes().split(b">")[1:]:
        header, _, body = rec.partition(b"\n")
        out[header.split()[0].decode()] = body.replace(b"\n", b"")
    return out


@pytest.fixture(scope="module")
def chr20(data_root) -> bytes:
    return parse_fasta(data_root / "genome" / "chr20.fa")["chr20"]


def write_fasta(path: Path, records: dict[str, str], width: int) -> Path:
    with open(path, "w") as f:
        for name, seq in records.items():
            f.write(f">{name} some description\n")
            f.writelines(seq[i : i + width] + "\n" for i in range(0, len(seq), width))
    return path


def test_windows_come_from_the_split_and_equal_the_fasta_bytes(data_root, chr20):
    fasta, bed = data_root / "genome" / "chr20.fa", data_root / "genome" / "intervals_1mb.bed"
    g = GenomeWindows(fasta, bed, "valid", context_len=127, seed=0)
    valid = [(s, e) for c, s, e, sp in (line.split() for line in bed.read_text().splitlines()) if sp == "valid"]
    valid = [(int(s), int(e)) for s, e in valid]
    ids, where = g.sample(np.random.default_rng(5), 300)
    assert ids.shape == (300, 128)
    used = set()
    for row in range(300):
        iv = g.intervals[where["interval"][row]]
        start = int(where["start"][row])
        assert iv.split == "valid" and (iv.start, iv.end) in valid
        assert iv.start <= start and start + 128 <= iv.end
        assert decode(ids[row]) == chr20[start : start + 128].decode().upper()
        used.add(iv.start)
    assert len(used) > 5  # draws spread over the split's intervals
    # epoch_windows is the same draw as int64 ids
    w = g.epoch_windows(0, 4)
    assert w.dtype == np.int64 and w.shape == (4, 128)


def test_windows_are_reproducible_from_seed_and_epoch(data_root):
    fasta, bed = data_root / "genome" / "chr20.fa", data_root / "genome" / "intervals_196kb.bed"
    a = GenomeWindows(fasta, bed, "train", context_len=64, seed=1)
    b = GenomeWindows(fasta, bed, "train", context_len=64, seed=1)
    c = GenomeWindows(fasta, bed, "train", context_len=64, seed=2)
    assert np.array_equal(a.epoch_windows(3, 50), b.epoch_windows(3, 50))
    assert not np.array_equal(a.epoch_windows(3, 50), a.epoch_windows(4, 50))
    assert not np.array_equal(a.epoch_windows(3, 50), c.epoch_windows(3, 50))
    # validation windows: fixed, and the same for every seed (comparable val losses)
    assert np.array_equal(a.fixed_windows(20), c.fixed_windows(20))
    assert len(pickle.dumps(a)) < 1_000_000  # the memory map is never pickled
    assert np.array_equal(pickle.loads(pickle.dumps(a)).epoch_windows(3, 5), a.epoch_windows(3, 5))


def test_odd_line_widths_multiple_contigs_and_missing_fai(tmp_path, monkeypatch):
    monkeypatch.setenv("GDNA_CACHE_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    recs = {f"c{i}": "".join(rng.choice(list("ACGTacgt"), size=n)) for i, n in enumerate((333, 1000, 71))}
    data = tmp_path / "data"
    data.mkdir()
    fasta = write_fasta(data / "g.fa", recs, width=7)
    (data / "g.bed").write_text("c0\t10\t333\ttrain\nc1\t0\t1000\ttrain\nc2\t0\t71\tvalid\n")
    g = GenomeWindows(fasta, data / "g.bed", "train", context_len=40, seed=0)
    assert sorted(p.name for p in data.iterdir()) == ["g.bed", "g.fa"]  # no .fai written beside the data
    assert list((tmp_path / "cache" / "fai").glob("*.fai"))
    ref = parse_fasta(fasta)
    ids, where = g.sample(np.random.default_rng(1), 200)
    for row in range(200):
        iv = g.intervals[where["interval"][row]]
        s = int(where["start"][row])
        assert decode(ids[row]) == ref[iv.chrom][s : s + 41].decode().upper()
    assert {g.intervals[i].chrom for i in where["interval"]} == {"c0", "c1"}
    assert FastaReader(fasta).fetch("c2", 60, 71) == ref["c2"][60:71]  # raw bytes, case kept


def test_mostly_n_windows_are_resampled(tmp_path, monkeypatch):
    monkeypatch.setenv("GDNA_CACHE_DIR", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    seq = "N" * 600 + "".join(rng.choice(list("ACGT"), size=400))
    fasta = write_fasta(tmp_path / "n.fa", {"chrN": seq}, width=60)
    (tmp_path / "n.bed").write_text("chrN\t0\t1000\ttrain\n")
    g = GenomeWindows(fasta, tmp_path / "n.bed", "train", context_len=99, seed=0)
    w = g.epoch_windows(0, 300)
    n_frac = (w == N_ID).mean(axis=1)
    assert n_frac.max() <= 0.5 and n_frac.max() > 0  # partly-N windows are kept, mostly-N ones redrawn
    (tmp_path / "allN.bed").write_text("chrN\t0\t500\ttrain\n")
    with pytest.raises(DataError, match="allN.bed: split 'train' has too few windows"):
        GenomeWindows(fasta, tmp_path / "allN.bed", "train", context_len=99, seed=0).epoch_windows(0, 2)


@pytest.fixture()
def small_genome(tmp_path, monkeypatch):
    monkeypatch.setenv("GDNA_CACHE_DIR", str(tmp_path / "cache"))
    return write_fasta(tmp_path / "s.fa", {"chr1": "ACGT" * 100, "chr2": "GGCC" * 50}, width=60)


@pytest.mark.parametrize(
    "bed_text, pattern",
    [
        ("chr1\t0\t300\ttrain\nchrX\t0\t100\ttrain\n", r"bad\.bed:2: chromosome 'chrX' is not in the FASTA .*s\.fa"),
        ("chr1\t0\t300\ttrain\nchr2\t100\t201\ttrain\n", r"bad\.bed:2: interval end 201 is past the end of chr2 \(length 200\)"),
        ("# header\nchr1\t0\t300\ttrain\nchr1\tzero\t300\ttrain\n", r"bad\.bed:3: malformed BED line"),
        ("chr1\t0\t300\n", r"bad\.bed:1: malformed BED line"),
        ("chr1\t50\t10\ttrain\n", r"bad\.bed:1: invalid interval 50-10"),
        ("chr1\t0\t300\tvalid\n", r"bad\.bed: no intervals for split 'train' \(splits: valid\)"),
        ("chr1\t0\t30\ttrain\n", r"bad\.bed: no 'train' interval is at least 65 bp long"),
    ],
)
def test_bad_bed_gives_one_line_error_naming_the_file(small_genome, bed_text, pattern):
    bed = small_genome.parent / "bad.bed"
    bed.write_text(bed_text)
    with pytest.raises(DataError, match=pattern) as e:
        GenomeWindows(small_genome, bed, "train", context_len=64, seed=0)
    assert "\n" not in str(e.value)


def test_missing_files(tmp_path, small_genome):
    (tmp_path / "ok.bed").write_text("chr1\t0\t300\ttrain\n")
    with pytest.raises(DataError, match=r"missing\.fa: FASTA file not found"):
        GenomeWindows(tmp_path / "missing.fa", tmp_path / "ok.bed", "train", 64)
    with pytest.raises(DataError, match=r"missing\.bed: BED file not found"):
        GenomeWindows(small_genome, tmp_path / "missing.bed", "train", 64)
    assert len(read_bed(tmp_path / "ok.bed")) == 1


def test_malformed_fasta_without_index(tmp_path, monkeypatch):
    monkeypatch.setenv("GDNA_CACHE_DIR", str(tmp_path / "cache"))
    bad = tmp_path / "ragged.fa"
    bad.write_text(">c1\nACGTACGT\nACG\nACGTACGT\n")  # a short line in the middle: no valid .fai layout
    with pytest.raises(DataError, match=r"ragged\.fa: cannot index FASTA") as e:
        FastaReader(bad)
    assert "\n" not in str(e.value)
    assert not list((tmp_path / "cache" / "fai").glob("*"))  # no half-written index left
