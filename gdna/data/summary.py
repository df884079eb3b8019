"""`gdna data summary`: what is under a data root: each task kind's tasks (classes, counts, lengths), the
genome (FASTA contigs, BED splits), and the data fingerprint of every task and genome (what a trial's
identity holds: the same data elsewhere has the same fingerprint)."""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import TextIO

from gdna.data.genome import FastaReader, read_bed
from gdna.data.tasks import task_fingerprint
from gdna.errors import DataError
from gdna.fingerprint import files_fingerprint
from gdna.registry import TASK_KINDS


def summarize(root: str | os.PathLike, out: TextIO) -> None:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data root not found (set --data-root or GDNA_DATA_ROOT)")
    print(f"data root: {root}", file=out)
    for kind in TASK_KINDS:
        tasks = kind.discover(root)
        print(f"\n{kind.name}: {len(tasks)} task(s)", file=out)
        for name in tasks:
            lines = kind.summary(root, name)
            print(f"  {name} (fingerprint {task_fingerprint(str(root.resolve()), name)}): {lines[0] if lines else ''}",
                  file=out)
            for line in lines[1:]:
                print(f"    {line}", file=out)
    _genome(root / "genome", out)


def _genome(genome: Path, out: TextIO) -> None:
    if not genome.is_dir():
        return
    print(f"\ngenome: {genome}", file=out)
    for fasta in sorted(p for p in genome.iterdir() if p.suffix in (".fa", ".fasta")):
        lengths = FastaReader(fasta).lengths
        shown = ", ".join(f"{k} ({v:,} bp)" for k, v in list(lengths.items())[:8])
        more = f", ... ({len(lengths)} contigs, {sum(lengths.values()):,} bp)" if len(lengths) > 8 else ""
        print(f"  {fasta.name} (fingerprint {files_fingerprint([fasta])}): {shown}{more}", file=out)
    for bed in sorted(genome.glob("*.bed")):
        ivs = read_bed(bed)
        counts = Counter(iv.split for iv in ivs)
        sizes = {iv.end - iv.start for iv in ivs}
        size = f"{min(sizes):,}" if len(sizes) == 1 else f"{min(sizes):,}-{max(sizes):,}"
        splits = ", ".join(f"{k}={counts[k]}" for k in sorted(counts))
        print(f"  {bed.name} (fingerprint {files_fingerprint([bed])}): {len(ivs)} intervals of {size} bp ({splits})",
              file=out)
