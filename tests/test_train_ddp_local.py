"""Two real gloo DDP ranks WITHOUT Ray (torch.multiprocessing, the loop's Runtime interface): a NaN on
ONE rank only must end the trial as `diverged` on BOTH ranks at the same step (the flag is
all-reduced, no rank is left waiting in a collective)."""
from __future__ import annotations

import json
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gdna.config import DataConfig, ModelConfig, TrainConfig, TrialConfig
from gdna.train.runtime import LocalRuntime


class DDPRuntime(LocalRuntime):
    """LocalRuntime for one rank of a torch.distributed group; rank 0 keeps the checkpoints."""

    def __init__(self, run_dir, rank: int, world_size: int):
        super().__init__(run_dir, device="cpu")
        self.rank, self.world_size = rank, world_size

    def prepare_model(self, model):
        return torch.nn.parallel.DistributedDataParallel(model)

    def report(self, metrics, checkpoint_dir):
        if self.rank == 0:
            super().report(metrics, checkpoint_dir)
        else:
            self.reports.append(dict(metrics))


def _worker(rank: int, world: int, init_file: str, trial: dict, run_dir: str, out_dir: str, nan_rank: int | None):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        if nan_rank == rank:
            import gdna.models.build as build
            from nan_injection import nan_after

            build.build_model = nan_after(build.build_model, 3)
        from gdna.train.loop import run

        rt = DDPRuntime(run_dir, rank, world)
        final = run({"trial": trial}, rt)
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump({"final": final, "reports": rt.reports}, f)
    finally:
        dist.destroy_process_group()


def _spawn(tmp_path, trial: TrialConfig, nan_rank):
    out = tmp_path / "out"
    out.mkdir()
    mp.start_processes(
        _worker, args=(2, str(tmp_path / "pg"), trial.to_dict(), str(tmp_path / "run"), str(out), nan_rank),
        nprocs=2, join=True, start_method="spawn",
    )
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.timeout(300)
def test_nan_on_one_rank_ends_both_ranks_diverged(tmp_path, data_root):
    trial = TrialConfig(
        model=ModelConfig(arch="hyena", d_model=32),
        data=DataConfig(data_root=str(data_root), task="human_enhancers_cohn", max_len=100,
                        max_train_examples=128, max_eval_examples=64),
        train=TrainConfig(objective="cls", lr=3e-3, batch_size=32, epochs=3, seed=0),
    ).validate()
    r0, r1 = _spawn(tmp_path, trial, nan_rank=1)
    # rank 1's 4th training forward (step 4 of epoch 1) is NaN: both ranks stop after 3 completed steps
    for r in (r0, r1):
        assert r["final"]["status"] == "diverged" and r["final"]["final"] is True
    assert r0["final"]["step"] == r1["final"]["step"] == 3
    assert [m["status"] for m in r0["reports"]] == [m["status"] for m in r1["reports"]] == ["diverged"]
