"""Content fingerprints of the files a trial reads, independent of where they sit.

A fingerprint is a short hash over (name relative to the data root, size, content hash) of every file.
The same data copied to another path gives the same fingerprint (so a content-addressed pretraining is
reused), one changed task file or BED line gives another (so it is never reused for other data).
Content hashes are cached by (absolute path, size, mtime) in `<GDNA_CACHE_DIR>/fingerprints.json`, so
after the first look a fingerprint costs one `stat` per file.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Iterable

CACHE_FILE = "fingerprints.json"
_lock = threading.Lock()
_memory: dict[str, list] = {}  # abs path → [size, mtime_ns, hash]
_loaded: set[str] = set()
_dirty = False  # new hashes not yet written to the cache file


def cache_dir() -> Path:
    """Where gdna keeps indexes and caches (GDNA_CACHE_DIR, else ~/.cache/gdna); never beside the data."""
    return Path(os.environ.get("GDNA_CACHE_DIR") or Path.home() / ".cache" / "gdna")


def file_fingerprint(path: Path, save: bool = True) -> str:
    """blake2b of the file's content (hex, 32 chars), cached by (path, size, mtime)."""
    path = Path(path).resolve()
    st = path.stat()
    key = str(path)
    with _lock:
        _load_cache()
        hit = _memory.get(key)
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            return hit[2]
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    global _dirty
    with _lock:
        _memory[key] = [st.st_size, st.st_mtime_ns, digest]
        _dirty = True
        if save:
            _save_cache()
    return digest


def files_fingerprint(files: Iterable[Path], root: Path | None = None) -> str:
    """One 12-hex-digit fingerprint of several files; names are taken relative to `root` when inside it."""
    # names from absolute paths without resolving links: a root of symlinks to the same files names them alike
    root = Path(os.path.abspath(root)) if root is not None else None
    entries = []
    for p in sorted({Path(os.path.abspath(f)) for f in files}):
        try:
            name = str(p.relative_to(root)) if root is not None else p.name
        except ValueError:
            name = p.name
        entries.append((name, p.stat().st_size, file_fingerprint(p, save=False)))
    with _lock:
        if _dirty:
            _save_cache()
    blob = json.dumps(entries, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def _cache_path() -> Path:
    return cache_dir() / CACHE_FILE


def _load_cache() -> None:
    path = _cache_path()
    if str(path) in _loaded:
        return
    _loaded.add(str(path))
    try:
        raw = json.loads(path.read_text())
        if isinstance(raw, dict):
            for k, v in raw.items():
                _memory.setdefault(k, v)
    except (OSError, ValueError):
        pass


def _save_cache() -> None:
    global _dirty
    path = _cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{CACHE_FILE}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(_memory, separators=(",", ":")))
        os.replace(tmp, path)
        _dirty = False
    except OSError:  # a read-only cache only costs re-hashing next time
        pass
