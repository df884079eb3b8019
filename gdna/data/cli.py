"""`gdna data summary | download` sub-commands."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gdna.config import default_data_root


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="inspect and download the data")
    sub = data.add_subparsers(dest="data_command", required=True)

    summary = sub.add_parser("summary", help="tasks, classes, counts, lengths, FASTA contigs, BED splits")
    _data_root(summary)
    summary.set_defaults(func=_summary)

    download = sub.add_parser("download", help="download datasets into the data root")
    what = download.add_subparsers(dest="dataset", required=True)
    gb = what.add_parser("genomic-benchmarks", help="the Genomic Benchmarks per-task zips (Zenodo)")
    _data_root(gb)
    gb.add_argument("--tasks", nargs="+", default=None, metavar="TASK", help="tasks to fetch (default: all 8)")
    gb.add_argument("--base-url", default=None, help="where <task>_v0.zip live (default: $GDNA_GB_BASE_URL or Zenodo)")
    gb.add_argument("--force", action="store_true", help="download again even if the task is present")
    gb.set_defaults(func=_download_gb)
    hg = what.add_parser("hg38", help="hg38.ml.fa + sequences_human.bed (the pretraining genome)")
    _data_root(hg)
    hg.add_argument("--url", default=None, help="FASTA URL (.fa or .fa.gz)")
    hg.add_argument("--bed-url", default=None, help="BED URL (chrom start end split)")
    hg.set_defaults(func=_download_hg38)


def _data_root(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", default=None, help="data root (default: $GDNA_DATA_ROOT or ../shared/data)")


def _root(args: argparse.Namespace) -> Path:
    return Path(args.data_root or default_data_root())


def _summary(args: argparse.Namespace) -> int:
    from gdna.data.summary import summarize

    summarize(_root(args), sys.stdout)
    return 0


def _download_gb(args: argparse.Namespace) -> int:
    from gdna.data.download import ALL_TASKS, download_genomic_benchmarks

    status = download_genomic_benchmarks(_root(args), args.tasks or ALL_TASKS, base_url=args.base_url, force=args.force)
    print(f"genomic-benchmarks: {sum(s == 'downloaded' for s in status.values())} downloaded, "
          f"{sum(s == 'present' for s in status.values())} already present")
    return 0


def _download_hg38(args: argparse.Namespace) -> int:
    from gdna.data import download

    kw = {k: v for k, v in (("fasta_url", args.url), ("bed_url", args.bed_url)) if v}
    status = download.download_hg38(_root(args), **kw)
    print("hg38: " + ", ".join(f"{k} {v}" for k, v in status.items()))
    return 0
