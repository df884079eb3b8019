"""One trial identity (TrialConfig.identity): location-free, with the data fingerprint.

- the same data copied to another path keeps every pretraining key (the content-addressed cache hits);
- one changed task file or BED line makes a new key;
- an in-flight trial continues when its storage (checkpoints, the pretraining it starts from) and its
  data are reached through another path.
"""
from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import yaml

from fault_injection import InjectedFailure, run_failing
from gdna.config import DataConfig, ModelConfig, TrainConfig, TrialConfig
from gdna.sweep.plan import build_plan
from gdna.sweep.spec import load_spec
from gdna.train.export import export_file
from gdna.train.loop import run
from gdna.train.runtime import LocalRuntime

pytestmark = pytest.mark.usefixtures("one_thread")
TASK = "human_enhancers_cohn"


def _small_root(src: Path, dst: Path) -> Path:
    """A data root with one task and the genome (the FASTA linked, not copied: 63 MB)."""
    (dst / "genomic_benchmarks").mkdir(parents=True)
    shutil.copytree(src / "genomic_benchmarks" / TASK, dst / "genomic_benchmarks" / TASK)
    (dst / "genome").mkdir()
    for f in ("chr20.fa", "chr20.fa.fai"):
        if (src / "genome" / f).exists():
            (dst / "genome" / f).symlink_to(src / "genome" / f)
    shutil.copy(src / "genome" / "intervals_1mb.bed", dst / "genome" / "intervals_1mb.bed")
    return dst


def _plan(tmp_path: Path, root: Path, name: str):
    spec = {"name": name, "tasks": [TASK], "architectures": ["transformer"], "strategies": ["scratch", "hg38", "task_spt"],
            "search_space": "smoke", "model": {"d_model": 32}, "pretrain": {"steps": 10, "context_lens": [64]}}
    p = tmp_path / f"{name}.yaml"
    p.write_text(yaml.safe_dump(spec))
    return build_plan(load_spec(p, data_root=str(root), storage=str(tmp_path / f"runs-{name}")))


def _keys(plan) -> dict[str, str]:
    keys = {j.strategy: j.key for j in plan.pretrain}
    for cell in plan.cells:
        if cell.strategy == "scratch":
            keys["finetune"] = plan.finetune_trial(cell, {"train.lr": 1e-3, "train.batch_size": 32}, {})[1]
    return keys


def test_same_data_elsewhere_same_keys_changed_data_new_keys(tmp_path, data_root):
    a = _small_root(data_root, tmp_path / "a")
    base = _keys(_plan(tmp_path, a, "a"))
    b = tmp_path / "b"
    shutil.copytree(a, b, symlinks=True)
    assert _keys(_plan(tmp_path, b, "b")) == base  # another path, another storage: the same identities
    # one changed BED line: a new genome pretraining; the task's pretraining and fine-tunes keep theirs
    bed = b / "genome" / "intervals_1mb.bed"
    lines = bed.read_text().splitlines()
    chrom, start, end, split = lines[0].split("\t")
    lines[0] = "\t".join([chrom, str(int(start) + 1), str(int(end) + 1), split])
    bed.write_text("\n".join(lines) + "\n")
    changed = _keys(_plan(tmp_path, b, "c"))
    assert changed["hg38"] != base["hg38"]
    assert changed["task_spt"] == base["task_spt"] and changed["finetune"] == base["finetune"]
    # one changed task file (same size): a new task pretraining and new fine-tuning identities
    seq = next((b / "genomic_benchmarks" / TASK / "train").rglob("*.txt"))
    text = seq.read_text()
    seq.write_text(("C" if text[0] != "C" else "G") + text[1:])
    changed = _keys(_plan(tmp_path, b, "d"))
    assert changed["task_spt"] != base["task_spt"] and changed["finetune"] != base["finetune"]


def _trial(root: Path, storage: Path, init_from: str) -> TrialConfig:
    return TrialConfig(
        model=ModelConfig.for_arch("transformer", d_model=32, n_heads=4),
        data=DataConfig(data_root=str(root), task=TASK, max_len=64, max_train_examples=96, max_eval_examples=48,
                        fingerprint="f" * 12),
        train=TrainConfig(objective="cls", lr=3e-3, batch_size=32, epochs=3, seed=0),
        init_checkpoint=str(export_file(storage / "pretrain" / init_from)), init_from=init_from,
    ).validate()


def test_in_flight_trial_resumes_through_a_moved_storage_and_data_root(tmp_path, data_root):
    # a pretraining export to start from, in storage A
    pre = TrialConfig(model=ModelConfig.for_arch("transformer", d_model=32, n_heads=4),
                      data=DataConfig(data_root=str(data_root), corpus="task", task=TASK, context_len=64,
                                      max_train_examples=64, max_eval_examples=16),
                      train=TrainConfig(objective="clm", lr=3e-3, batch_size=16, max_steps=4, eval_every=4))
    key = pre.identity()
    a = tmp_path / "A"
    run({"trial": dataclasses.replace(pre, export_dir=str(a / "pretrain" / key)).to_dict()}, LocalRuntime(tmp_path / "pre"))
    trial_a = _trial(data_root, a, key)
    ref = run({"trial": trial_a.to_dict()}, LocalRuntime(tmp_path / "ref"))
    # interrupted after epoch 1 in storage A
    cfg = {"trial": trial_a.to_dict(), "fail_after": 1, "fail_marker": str(tmp_path / "marker")}
    with pytest.raises(InjectedFailure):
        run_failing(cfg, LocalRuntime(a / "train" / "t"))
    # the storage is now mounted elsewhere (B), and the data too
    b = tmp_path / "B"
    shutil.move(a, b)
    (tmp_path / "data").symlink_to(data_root)
    trial_b = _trial(tmp_path / "data", b, key)
    assert trial_b.identity() == trial_a.identity()
    rt = LocalRuntime(b / "train" / "t")
    final = run({"trial": trial_b.to_dict()}, rt)
    assert [r["epoch"] for r in rt.reports] == [2, 3]  # continued from epoch 1, not restarted
    drop = lambda r: {k: v for k, v in r.items() if k not in ("tokens_per_s", "time_train_s")}
    assert drop(final) == drop(ref)
