"""Fixed-length causal-LM windows from a FASTA + 4-column BED (`chrom start end split`).

Reading: the FASTA's samtools .fai index gives each contig's byte offset and line layout, so a window is
one contiguous slice of a read-only memory map of the FASTA with its line breaks dropped (never a whole
chromosome per window; offsets for many windows are computed in one numpy pass). A missing .fai is built by pyfaidx into a writable cache
(GDNA_CACHE_DIR, else ~/.cache/gdna), never beside the FASTA (the shared data is read-only).

Sampling: an interval is drawn with probability proportional to its number of valid window starts
(so every start position of the split is equally likely), then a uniform offset inside it. Windows with
more than 50% N are RESAMPLED (not skipped), so a call always returns exactly n windows.
IUPAC ambiguity codes (R, Y, ...) read as N.
"""
from __future__ import annotations

import hashlib
import mmap
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from gdna.errors import DataError
from gdna.data.tokenizer import BYTE_TO_ID, INVALID, N_ID

MAX_N_FRACTION = 0.5
MAX_RESAMPLE_ROUNDS = 100
SPLIT_ALIASES = {"val": "valid", "validation": "valid"}
STREAM_EPOCH, STREAM_FIXED = 0x6E01, 0x6E02

GENOME_LUT = BYTE_TO_ID.copy()  # FASTA byte -> token id; ambiguity codes -> N
for _c in "RYKMSWBDHVrykmswbdhv":
    GENOME_LUT[ord(_c)] = N_ID


def cache_dir() -> Path:
    return Path(os.environ.get("GDNA_CACHE_DIR") or Path.home() / ".cache" / "gdna")


@dataclass(frozen=True)
class Contig:
    name: str
    length: int
    offset: int  # byte offset of the first base
    line_bases: int
    line_width: int


def fai_path(fasta: Path) -> Path:
    """The .fai to use: beside the FASTA if present, else one in the writable cache (built by pyfaidx)."""
    beside = Path(str(fasta) + ".fai")
    if beside.exists():
        return beside
    key = hashlib.sha1(str(fasta.resolve()).encode()).hexdigest()[:12]
    cached = cache_dir() / "fai" / f"{key}-{fasta.name}.fai"
    if not cached.exists() or cached.stat().st_mtime < fasta.stat().st_mtime:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DataError(f"{fasta}: no .fai beside it and cannot create {cached.parent} ({e.strerror}); set GDNA_CACHE_DIR") from None
        import pyfaidx  # lazy: only needed to build a missing index

        tmp = cached.with_suffix(f".tmp{os.getpid()}")
        try:
            pyfaidx.Faidx(str(fasta), indexname=str(tmp), rebuild=True).close()
        except Exception as e:  # pyfaidx raises several types for malformed FASTA
            tmp.unlink(missing_ok=True)
            raise DataError(f"{fasta}: cannot index FASTA ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
        os.replace(tmp, cached)
    return cached


class FastaReader:
    """Random access to an uncompressed FASTA through its .fai and a read-only memory map (picklable)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"{self.path}: FASTA file not found")
        if self.path.suffix in (".gz", ".bgz", ".bgzf"):
            raise DataError(f"{self.path}: compressed FASTA is not supported (decompress it first)")
        self.index_path = fai_path(self.path)
        self.contigs = _read_fai(self.index_path)
        self._mm: mmap.mmap | None = None

    @property
    def lengths(self) -> dict[str, int]:
        return {name: c.length for name, c in self.contigs.items()}

    def _map(self) -> mmap.mmap:
        if self._mm is None:
            with open(self.path, "rb") as f:
                self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return self._mm

    def __getstate__(self) -> dict:  # never pickle the mapping (reopened lazily after unpickling)
        return {**self.__dict__, "_mm": None}

    @staticmethod
    def _byte(layout: dict[str, np.ndarray], pos: np.ndarray) -> np.ndarray:
        """0-based base positions (n,) → byte offsets (n,) in the file, given per-window .fai layout."""
        return layout["offset"] + (pos // layout["line_bases"]) * layout["line_width"] + pos % layout["line_bases"]

    def gather(self, contig: str, starts: np.ndarray, length: int) -> np.ndarray:
        """Raw FASTA bytes of windows [start, start+length) on one contig → (n, length) uint8."""
        return self.gather_many([contig] * len(starts), starts, length)

    def gather_many(self, contigs: Sequence[str], starts: np.ndarray, length: int) -> np.ndarray:
        """Windows [start, start+length) of contigs[i] → (n, length) uint8 raw bytes.

        Each window is one contiguous slice of the memory map (line breaks removed), so the cost is a
        memcpy per window, not per-base index arithmetic. Callers check bounds (BED validation).
        """
        starts = np.asarray(starts, dtype=np.int64)
        cs = [self.contigs[c] for c in contigs]
        layout = {k: np.array([getattr(c, k) for c in cs], dtype=np.int64) for k in ("offset", "line_bases", "line_width")}
        first, last = self._byte(layout, starts), self._byte(layout, starts + length - 1) + 1  # (n,), (n,)
        mm = self._map()
        blob = b"".join(mm[a:b].translate(None, b"\r\n") for a, b in zip(first.tolist(), last.tolist()))
        if len(blob) != len(starts) * length:
            raise DataError(f"{self.path}: window bytes do not match the .fai layout (stale or wrong index {self.index_path}?)")
        return np.frombuffer(blob, dtype=np.uint8).reshape(len(starts), length)

    def fetch(self, contig: str, start: int, end: int) -> bytes:
        return self.gather(contig, np.array([start]), end - start)[0].tobytes()


def _read_fai(path: Path) -> dict[str, Contig]:
    contigs = {}
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            cols = line.rstrip("\n").split("\t")
            try:
                name, length, offset, lb, lw = cols[0], *map(int, cols[1:5])
            except (ValueError, IndexError):
                raise DataError(f"{path}:{lineno}: malformed .fai line") from None
            contigs[name] = Contig(name, length, offset, lb, lw)
    if not contigs:
        raise DataError(f"{path}: empty FASTA index")
    return contigs


@dataclass(frozen=True)
class Interval:
    chrom: str
    start: int
    end: int
    split: str
    line: int  # 1-based line number in the BED file


def read_bed(bed: str | os.PathLike, contig_lengths: dict[str, int] | None = None, fasta: object = "") -> list[Interval]:
    """All intervals of a 4-column BED; checks them against contig lengths when given (errors name file:line)."""
    bed = Path(bed)
    if not bed.is_file():
        raise DataError(f"{bed}: BED file not found")
    out = []
    with open(bed) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip() or line.startswith(("#", "track", "browser")):
                continue
            cols = line.split()
            try:
                chrom, start, end, split = cols[0], int(cols[1]), int(cols[2]), cols[3]
            except (ValueError, IndexError):
                raise DataError(f"{bed}:{lineno}: malformed BED line {line.strip()[:60]!r} (expected chrom start end split)") from None
            if not 0 <= start < end:
                raise DataError(f"{bed}:{lineno}: invalid interval {start}-{end} (need 0 <= start < end)")
            if contig_lengths is not None:
                if chrom not in contig_lengths:
                    raise DataError(f"{bed}:{lineno}: chromosome {chrom!r} is not in the FASTA {fasta}")
                if end > contig_lengths[chrom]:
                    raise DataError(
                        f"{bed}:{lineno}: interval end {end} is past the end of {chrom} "
                        f"(length {contig_lengths[chrom]}) in {fasta}"
                    )
            out.append(Interval(chrom, start, end, SPLIT_ALIASES.get(split, split), lineno))
    return out


class GenomeWindows:
    """Windows of context_len + 1 tokens from the BED intervals of one split, reproducible from (seed, epoch)."""

    def __init__(self, fasta: str | os.PathLike, bed: str | os.PathLike, split: str, context_len: int, seed: int = 0):
        self.fasta = FastaReader(fasta)
        self.bed = Path(bed)
        self.split = SPLIT_ALIASES.get(split, split)
        self.context_len = int(context_len)
        self.window = self.context_len + 1
        self.seed = int(seed)
        every = read_bed(self.bed, self.fasta.lengths, self.fasta.path)
        mine = [iv for iv in every if iv.split == self.split]
        if not mine:
            splits = ", ".join(sorted({iv.split for iv in every})) or "none"
            raise DataError(f"{self.bed}: no intervals for split {self.split!r} (splits: {splits})")
        mine = [iv for iv in mine if iv.end - iv.start >= self.window]
        if not mine:
            raise DataError(f"{self.bed}: no {self.split!r} interval is at least {self.window} bp long")
        self.intervals = mine
        self._chrom = np.array([iv.chrom for iv in mine])
        self._start = np.array([iv.start for iv in mine], dtype=np.int64)
        self._n_starts = np.array([iv.end - iv.start - self.window + 1 for iv in mine], dtype=np.int64)
        self._p = self._n_starts / self._n_starts.sum()
        self._fixed: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        """Number of distinct window start positions in the split."""
        return int(self._n_starts.sum())

    def epoch_windows(self, epoch: int, n: int) -> np.ndarray:
        """n windows for one epoch → ids (n, L+1) int64; the same (seed, epoch) gives the same windows."""
        return self.sample(np.random.default_rng([self.seed, STREAM_EPOCH, int(epoch)]), n)[0].astype(np.int64)

    def fixed_windows(self, n: int) -> np.ndarray:
        """n validation windows → ids (n, L+1) int64, identical for every seed (comparable val losses)."""
        if n not in self._fixed:
            self._fixed[n] = self.sample(np.random.default_rng([STREAM_FIXED]), n)[0]
        return self._fixed[n].astype(np.int64)

    def sample(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """→ (token ids (n, L+1) uint8, coordinates (n,) of (interval index, start)); >50% N windows are redrawn."""
        ids = np.empty((n, self.window), dtype=np.uint8)
        where = np.empty(n, dtype=[("interval", np.int64), ("start", np.int64)])
        todo = np.arange(n)
        for _ in range(MAX_RESAMPLE_ROUNDS):
            if not len(todo):
                return ids, where
            iv = rng.choice(len(self._p), size=len(todo), p=self._p)
            start = self._start[iv] + rng.integers(0, self._n_starts[iv])
            win = self._read(iv, start)
            ids[todo], where["interval"][todo], where["start"][todo] = win, iv, start
            todo = todo[(win == N_ID).mean(axis=1) > MAX_N_FRACTION]
        if not len(todo):
            return ids, where
        raise DataError(f"{self.bed}: split {self.split!r} has too few windows with ≤50% N (after {MAX_RESAMPLE_ROUNDS} redraws)")

    def _read(self, iv: np.ndarray, start: np.ndarray) -> np.ndarray:
        """(n,) interval indices + absolute starts → token ids (n, L+1) uint8."""
        out = GENOME_LUT[self.fasta.gather_many(self._chrom[iv].tolist(), start, self.window)]
        if (out == INVALID).any():
            raise DataError(f"{self.fasta.path}: unexpected non-sequence byte inside a window (corrupt FASTA or .fai?)")
        return out
