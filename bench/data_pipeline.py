"""Is training ever waiting on data? gdna's real data path on the real DNA, side by side in one run:

1. The share of training time spent waiting on data (goal < 5%): gdna's loop (gdna.train.loop.run,
   LocalRuntime, in this process) on a pretraining trial (genome windows from chr20, causal LM) and a
   fine-tuning trial (a Genomic Benchmarks task, classification); the loop times every `next()` on its
   DataLoader (sampling, reading, tokenizing, collating: the end event's `data_wait_s`) and the share is
   data wait / time in the training steps (`train_s`, the loop's optimizer-step time, data included).
   With `train.loader_workers` 0 (the default) the data is made in the training thread, so the wait is
   all of the data work; --loader-workers N measures N DataLoader processes instead.
   Both datasets hold tokens, not text: a fine-tuning task is tokenized once when the trial builds its
   datasets (loop setup, outside the steps), and the genome windows of a pretraining epoch are sampled
   and tokenized once per epoch (`set_epoch`, outside the step timer). The latter is added back: its
   share = training tokens/s / window-sampling tokens/s (part 2), printed as "incl. epoch windows".
2. Tokenization throughput, MB of DNA per second (1 byte = 1 base):
     encode_bytes    one long chr20 slice (--fasta-mb) through the byte → id lookup table
     encode_batch    the task's training sequences, --batch at a time (padding, mask), as a loader calls it
     genome windows  GenomeWindows.epoch_windows: sampling + reading + tokenizing --context + 1 windows
     task dataset    the fine-tuning Dataset's items + collate_cls, a batch at a time (what the loop's loader does)

    GDNA_DATA_ROOT=/work/shared/data .venv/bin/python bench/data_pipeline.py [--arch transformer]
        [--d-model 128] [--context 1024] [--batch 16] [--steps 12] [--task human_enhancers_cohn]
        [--max-train 384] [--loader-workers 0] [--threads 1] [--fasta-mb 16] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timing import median_times  # noqa: E402 (bench/timing.py)


def loop_share(trial, tmp: Path, name: str) -> dict:
    """Run gdna's loop bare on `trial`; the data wait and train time from its end event."""
    from gdna.train.events import read_events
    from gdna.train.loop import run
    from gdna.train.runtime import LocalRuntime

    m = run({"trial": trial.to_dict()}, LocalRuntime(tmp / name, device="cpu"))
    ev = read_events(str(tmp), name)
    start = next(e for e in ev if e["event"] == "start")
    end = next(e for e in ev if e["event"] == "end")
    return {"name": name, "train_s": end["train_s"], "data_wait_s": end["data_wait_s"],
            "inside_s": end["time"] - start["entered"], "share": end["data_wait_s"] / end["train_s"],
            "tokens_per_s": m.get("tokens_per_s", 0.0), "load": os.getloadavg()[0]}


def best_rate(fn, nbytes: int, repeats: int) -> tuple[float, float]:
    """(MB/s by wall time, MB/s by process CPU time): the median of `repeats` calls after a warm-up."""
    fn()
    wall, cpu = median_times(fn, repeats)
    return nbytes / 1e6 / wall, nbytes / 1e6 / max(cpu, 1e-9)


def tokenization(args) -> list[tuple[str, float, float]]:
    import numpy as np

    from gdna.config import DataConfig
    from gdna.data.genome import FastaReader, GenomeWindows
    from gdna.data.genomic_benchmarks import load_task
    from gdna.data.tasks import classification_datasets, collate_cls
    from gdna.data.tokenizer import encode_batch, encode_bytes

    cfg = DataConfig()
    rows = []
    fasta = FastaReader(cfg.path(cfg.genome_fasta))
    contig, length = max(fasta.lengths.items(), key=lambda kv: kv[1])
    n = min(length, int(args.fasta_mb * 1e6))
    start = (length - n) // 2
    raw = fasta.fetch(contig, start, start + n)
    rows.append((f"encode_bytes {contig} {n / 1e6:.0f} Mb", *best_rate(lambda: encode_bytes(raw, unknown="unk"), n, 3)))

    task = load_task(cfg.root(), args.task)
    seqs = [s for s, _ in task.train]
    nb = sum(len(s) for s in seqs)
    chunks = [seqs[i:i + args.batch] for i in range(0, len(seqs), args.batch)]
    rows.append((f"encode_batch {args.task} train ({len(seqs)} seqs, {args.batch}/call)",
                 *best_rate(lambda: [encode_batch(c) for c in chunks], nb, 3)))

    gw = GenomeWindows(cfg.path(cfg.genome_fasta), cfg.path(cfg.genome_bed), "train", args.context, seed=0)
    n_win = 256
    epoch = iter(range(1, 10 ** 6))
    rows.append((f"genome windows {n_win} × {args.context + 1} (epoch_windows)",
                 *best_rate(lambda: gw.epoch_windows(next(epoch), n_win), n_win * (args.context + 1), 3)))

    dcfg = DataConfig(task=args.task, n_folds=1)
    train_ds, _, _, _ = classification_datasets(dcfg, 0)
    idx = np.arange(min(len(train_ds), 4 * args.batch * 8))
    batches = [idx[i:i + args.batch] for i in range(0, len(idx), args.batch)]
    item_bytes = sum(int(train_ds[int(i)][1].sum()) for i in idx)  # real (unpadded) tokens ≈ bases
    rows.append((f"task dataset + collate_cls ({len(idx)} items, {args.batch}/batch)",
                 *best_rate(lambda: [collate_cls([train_ds[int(i)] for i in b]) for b in batches], item_bytes, 3)))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="transformer")
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=12, help="pretraining trial: optimizer steps")
    ap.add_argument("--task", default="human_enhancers_cohn")
    ap.add_argument("--max-train", type=int, default=384, help="fine-tuning trial: training examples (1 epoch)")
    ap.add_argument("--loader-workers", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--fasta-mb", type=float, default=16)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import torch

    from gdna.config import DataConfig, ModelConfig, TrainConfig, TrialConfig
    from gdna.train.trainer import resolve_trial

    torch.set_num_threads(args.threads)
    print(f"data pipeline: {args.arch} d_model {args.d_model}, batch {args.batch}, loader workers {args.loader_workers}, "
          f"torch threads {args.threads}; {os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.1f}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="gdna-bench-data-"))
    model = ModelConfig.for_arch(args.arch, d_model=args.d_model)
    clm = resolve_trial(TrialConfig(
        model=model,
        data=DataConfig(corpus="genome", context_len=args.context, windows_per_epoch=args.batch * args.steps,
                        eval_windows=args.batch),
        train=TrainConfig(objective="clm", batch_size=args.batch, max_steps=args.steps, eval_every=args.steps,
                          loader_workers=args.loader_workers, seed=0)))
    cls = resolve_trial(TrialConfig(
        model=model,
        data=DataConfig(task=args.task, n_folds=1, max_train_examples=args.max_train, max_eval_examples=64),
        train=TrainConfig(objective="cls", batch_size=args.batch, epochs=1, loader_workers=args.loader_workers, seed=0)))
    out: dict = {"args": vars(args), "loops": [], "tokenization": []}
    print(f"{'trial':<44}{'train s':>9}{'data wait s':>13}{'share':>8}{'tok/s':>10}  load", flush=True)
    for name, trial in ((f"pretrain clm genome L={args.context}, {args.steps} steps", clm),
                        (f"finetune cls {args.task}, {args.max_train} ex.", cls)):
        r = loop_share(trial, tmp, name.split()[0])
        out["loops"].append({**r, "label": name})
        print(f"{name:<44}{r['train_s']:>9.2f}{r['data_wait_s']:>13.3f}{100 * r['share']:>7.2f}%{r['tokens_per_s']:>10,.0f}"
              f"  {r['load']:.1f}   (goal < 5%)", flush=True)
    print(f"{'tokenization':<64}{'MB/s':>9}{'MB/s per CPU s':>16}", flush=True)
    for label, wall, cpu in tokenization(args):
        out["tokenization"].append({"label": label, "mb_per_s": wall, "mb_per_cpu_s": cpu})
        print(f"{label:<64}{wall:>9,.1f}{cpu:>16,.1f}", flush=True)
    windows = next(t for t in out["tokenization"] if t["label"].startswith("genome windows"))
    pre = out["loops"][0]
    epoch_share = pre["tokens_per_s"] / (windows["mb_per_s"] * 1e6)  # sampling s per token / training s per token
    out["pretrain_share_incl_epoch_windows"] = pre["share"] + epoch_share
    print(f"pretraining incl. epoch windows: {100 * pre['share']:.2f}% in the steps + {100 * epoch_share:.3f}% sampling "
          f"the epoch's windows = {100 * out['pretrain_share_incl_epoch_windows']:.2f}% (goal < 5%)")
    print(f"load avg {os.getloadavg()[0]:.1f}")
    shutil.rmtree(tmp, ignore_errors=True)  # the runs' checkpoints and events
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
