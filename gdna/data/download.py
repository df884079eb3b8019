"""Downloads: the Genomic Benchmarks per-task zips (Zenodo) and the hg38 pretraining genome.

Every download streams into a temporary file beside its destination, is checked (Content-Length vs
bytes received, zip integrity, md5 when known) and only then renamed into place, so an interrupted or
corrupt download never leaves a half-written task or FASTA behind. Tasks already present are skipped.
"""
from __future__ import annotations

import gzip
import http.client
import hashlib
import os
import shutil
import socket
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Callable, Iterable, TextIO

from gdna.errors import DataError
from gdna.data.genomic_benchmarks import ALL_TASKS, GB_DIR, read_task_dir

GB_BASE_URL = "https://zenodo.org/records/16605299/files"
GB_BASE_URL_ENV = "GDNA_GB_BASE_URL"
GB_VERSION = 0
KNOWN_MD5: dict[str, str] = {}  # "<task>_v0.zip" -> md5 hex; checked when listed here
HG38_FASTA_URL = "https://storage.googleapis.com/basenji_barnyard2/hg38.ml.fa.gz"
HG38_BED_URL = "https://storage.googleapis.com/basenji_barnyard2/sequences_human.bed"
TIMEOUT_S = 60
_BLOCK = 1 << 20


def gb_base_url(base_url: str | None = None) -> str:
    return (base_url or os.environ.get(GB_BASE_URL_ENV) or GB_BASE_URL).rstrip("/")


def task_present(root: Path, task: str) -> bool:
    d = Path(root) / GB_DIR / task
    return (d / "train").is_dir() and (d / "test").is_dir()


def fetch(url: str, dest: Path, *, md5: str | None = None, log: TextIO = sys.stderr) -> int:
    """Stream `url` into `dest` (a temp file the caller renames) → bytes written; DataError on any failure."""
    try:
        resp = urllib.request.urlopen(url, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        raise DataError(f"{url}: download failed (HTTP {e.code} {e.reason})") from None
    except (urllib.error.URLError, socket.timeout, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DataError(f"{url}: cannot reach the server ({reason}); are you offline?") from None
    expected = resp.headers.get("Content-Length")
    expected = int(expected) if expected and expected.isdigit() else None
    digest = hashlib.md5()
    got, shown = 0, -1
    try:
        with resp, open(dest, "wb") as out:
            while True:
                block = resp.read(_BLOCK)
                if not block:
                    break
                out.write(block)
                digest.update(block)
                got += len(block)
                shown = _progress(log, url, got, expected, shown)
    except (OSError, http.client.HTTPException) as e:  # connection dropped mid-stream (IncompleteRead, reset, timeout)
        raise DataError(f"{url}: download interrupted after {got} bytes ({type(e).__name__})") from None
    print(file=log)
    if expected is not None and got != expected:
        raise DataError(f"{url}: truncated download ({got} of {expected} bytes)")
    if md5 and digest.hexdigest() != md5.lower():
        raise DataError(f"{url}: md5 mismatch (got {digest.hexdigest()}, expected {md5})")
    return got


def _progress(log: TextIO, url: str, got: int, total: int | None, shown: int) -> int:
    """One progress line rewritten in place, at most every 5% (or every 10 MB without a size)."""
    step = int(got * 20 / total) if total else got // (10 << 20)
    if step != shown:
        size = f"{got / 1e6:.1f}/{total / 1e6:.1f} MB" if total else f"{got / 1e6:.1f} MB"
        print(f"\r  {url.rsplit('/', 1)[-1]}: {size}", end="", file=log, flush=True)
    return step


def _safe_extract(zf: zipfile.ZipFile, dest: Path, source: str) -> None:
    for member in zf.infolist():
        name = member.filename
        if name.startswith("__MACOSX/") or Path(name).name == ".DS_Store":
            continue
        target = (dest / name).resolve()
        if not str(target).startswith(str(dest.resolve()) + os.sep):
            raise DataError(f"{source}: unsafe path in zip: {name!r}")
        zf.extract(member, dest)


def _find_task_root(extracted: Path, task: str, source: str) -> Path:
    """The folder holding train/ and test/: the extraction dir itself or one top-level folder."""
    if (extracted / "train").is_dir() and (extracted / "test").is_dir():
        return extracted
    tops = [p for p in extracted.iterdir() if p.is_dir() and p.name != "__MACOSX"]
    for top in sorted(tops, key=lambda p: p.name != task):  # prefer the folder named after the task
        if (top / "train").is_dir() and (top / "test").is_dir():
            return top
    raise DataError(f"{source}: unexpected zip layout (no train/ and test/ folders for {task})")


def download_task(root: Path, task: str, *, base_url: str | None = None, log: TextIO = sys.stderr, force: bool = False) -> str:
    """Download + unpack one task into <root>/genomic_benchmarks/<task> → 'present' | 'downloaded'."""
    gb = Path(root) / GB_DIR
    dest = gb / task
    if task_present(root, task) and not force:
        print(f"{task}: already present in {dest}", file=log)
        return "present"
    fname = f"{task}_v{GB_VERSION}.zip"
    url = f"{gb_base_url(base_url)}/{fname}"
    _writable_dir(gb)
    with tempfile.TemporaryDirectory(prefix=f".tmp-{task}-", dir=gb) as tmp:
        zpath = Path(tmp) / fname
        print(f"{task}: downloading {url}", file=log)
        fetch(url, zpath, md5=KNOWN_MD5.get(fname), log=log)
        try:
            with zipfile.ZipFile(zpath) as zf:
                bad = zf.testzip()
                if bad is not None:
                    raise DataError(f"{url}: corrupt zip (bad CRC in {bad})")
                _safe_extract(zf, Path(tmp) / "x", url)
        except zipfile.BadZipFile as e:
            raise DataError(f"{url}: not a valid zip ({e})") from None
        src = _find_task_root(Path(tmp) / "x", task, url)
        read_task_dir(src, task)  # a task that would not load never lands in the data root
        if dest.exists():  # force: replace the old copy only once the new one is complete
            shutil.rmtree(dest)
        os.replace(src, dest)
    print(f"{task}: unpacked into {dest}", file=log)
    return "downloaded"


def download_genomic_benchmarks(
    root: Path, tasks: Iterable[str] = ALL_TASKS, *, base_url: str | None = None, log: TextIO = sys.stderr, force: bool = False
) -> dict[str, str]:
    """Download several tasks → {task: 'present' | 'downloaded'}."""
    tasks = list(tasks)
    unknown = [t for t in tasks if t not in ALL_TASKS]
    if unknown:
        raise DataError(f"--tasks: unknown task {unknown[0]!r} (choose from {', '.join(ALL_TASKS)})")
    return {t: download_task(root, t, base_url=base_url, log=log, force=force) for t in tasks}


def _writable_dir(d: Path) -> None:
    try:
        d.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=d).close()
    except OSError as e:
        raise DataError(f"{d}: cannot write here ({e.strerror or e}); choose another --data-root") from None


def _fetch_file(url: str, dest: Path, log: TextIO, transform: Callable[[Path, Path], None] | None = None) -> str:
    if dest.exists():
        print(f"{dest.name}: already present in {dest.parent}", file=log)
        return "present"
    _writable_dir(dest.parent)
    with tempfile.TemporaryDirectory(prefix=f".tmp-{dest.name}-", dir=dest.parent) as tmp:
        raw = Path(tmp) / url.rsplit("/", 1)[-1]
        print(f"{dest.name}: downloading {url}", file=log)
        fetch(url, raw, log=log)
        final = Path(tmp) / dest.name
        if transform is not None:
            transform(raw, final)
        else:
            os.replace(raw, final)
        os.replace(final, dest)
    return "downloaded"


def _gunzip(src: Path, dst: Path) -> None:
    try:
        with gzip.open(src, "rb") as fin, open(dst, "wb") as fout:
            shutil.copyfileobj(fin, fout, _BLOCK)
    except (OSError, EOFError) as e:
        raise DataError(f"{src.name}: corrupt gzip ({e})") from None


def download_hg38(root: Path, *, fasta_url: str = HG38_FASTA_URL, bed_url: str = HG38_BED_URL, log: TextIO = sys.stderr) -> dict[str, str]:
    """hg38.ml.fa (+ .fai) and sequences_human.bed into <root>/genome/ → {file: status}."""
    genome = Path(root) / "genome"
    fasta = genome / "hg38.ml.fa"
    status = {
        fasta.name: _fetch_file(fasta_url, fasta, log, _gunzip if fasta_url.endswith(".gz") else None),
        "sequences_human.bed": _fetch_file(bed_url, genome / "sequences_human.bed", log),
    }
    if not Path(str(fasta) + ".fai").exists():
        import pyfaidx

        print(f"{fasta.name}: indexing", file=log)
        try:
            pyfaidx.Faidx(str(fasta)).close()  # writes hg38.ml.fa.fai beside it (our own download dir)
        except Exception as e:
            raise DataError(f"{fasta}: cannot index FASTA ({e})") from None
    return status
