"""`gdna data summary`: what is under a data root (tasks, FASTA contigs, BED splits, great apes)."""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import TextIO

import numpy as np

from gdna.errors import DataError
from gdna.data.genome import FastaReader, read_bed
from gdna.data.genomic_benchmarks import list_tasks, load_task


def summarize(root: str | os.PathLike, out: TextIO) -> None:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data root not found (set --data-root or GDNA_DATA_ROOT)")
    print(f"data root: {root}", file=out)
    _tasks(root, out)
    _genome(root / "genome", out)
    _greatapes(root / "greatapes", out)


def _tasks(root: Path, out: TextIO) -> None:
    tasks = list_tasks(root)
    print(f"\ngenomic_benchmarks: {len(tasks)} task(s)", file=out)
    for name in tasks:
        task = load_task(root, name)
        print(f"  {name}: classes {', '.join(task.classes)}", file=out)
        for split_name, split in (("train", task.train), ("test", task.test)):
            counts = np.bincount(split.labels, minlength=task.n_classes)
            per_class = ", ".join(f"{c}={n}" for c, n in zip(task.classes, counts))
            lens = split.lengths
            print(f"    {split_name:5s} {len(split):7d}  ({per_class})  length {lens.min()}-{lens.max()}", file=out)


def _genome(genome: Path, out: TextIO) -> None:
    if not genome.is_dir():
        return
    print(f"\ngenome: {genome}", file=out)
    for fasta in sorted(p for p in genome.iterdir() if p.suffix in (".fa", ".fasta")):
        lengths = FastaReader(fasta).lengths
        shown = ", ".join(f"{k} ({v:,} bp)" for k, v in list(lengths.items())[:8])
        more = f", ... ({len(lengths)} contigs, {sum(lengths.values()):,} bp)" if len(lengths) > 8 else ""
        print(f"  {fasta.name}: {shown}{more}", file=out)
    for bed in sorted(genome.glob("*.bed")):
        ivs = read_bed(bed)
        counts = Counter(iv.split for iv in ivs)
        sizes = {iv.end - iv.start for iv in ivs}
        size = f"{min(sizes):,}" if len(sizes) == 1 else f"{min(sizes):,}-{max(sizes):,}"
        splits = ", ".join(f"{k}={counts[k]}" for k in sorted(counts))
        print(f"  {bed.name}: {len(ivs)} intervals of {size} bp ({splits})", file=out)


def _greatapes(apes: Path, out: TextIO) -> None:
    if not apes.is_dir():
        return
    print(f"\ngreatapes: {apes}", file=out)
    for fasta in sorted(apes.glob("*.fa")):
        lengths = FastaReader(fasta).lengths
        print(f"  {fasta.stem}: {len(lengths)} records, {sum(lengths.values()):,} bp", file=out)
