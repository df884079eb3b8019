"""The training loop that Ray Train's TorchTrainer runs on every worker, for both objectives.

    cls  fine-tuning on a classification task: `epochs` epochs (early stopping with `patience` on
         validation accuracy), a report + checkpoint per epoch, and at the end the test accuracy of the
         best-VALIDATION model (never selected on test).
    clm  causal-LM pretraining: `max_steps` optimizer steps, validate + report + checkpoint every
         `eval_every` steps (and at the last step); the lowest-validation-loss model is exported to
         `<export_dir>/backbone.pt` (+ `done.json`, written last; gdna.train.export).

The two objectives are two small objects (`Classification`, `CausalLM`) over the shared pieces of
`_Loop` (optimizer steps, evaluation, reports + checkpoints). `train_loop_per_worker(config)` is the Ray
entry point; `run(config, runtime)` is the same loop with an explicit runtime (`LocalRuntime` runs it
in-process for tests and the overhead benchmark). config = {"trial": TrialConfig.to_dict(), "verbose": bool}.
"""
from __future__ import annotations

import dataclasses
import math
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from gdna.config import ModelConfig, TrialConfig, to_dict
from gdna.errors import ConfigError
from gdna.train import batches as B
from gdna.train import checkpoint as C
from gdna.train.export import write_export
from gdna.train.runtime import RayRuntime, Runtime
from gdna.train.schedule import build_optimizer, build_scheduler
from gdna.train.steps import batch_count, batch_tokens, evaluate, perplexity, train_step


def train_loop_per_worker(config: dict) -> None:
    run(config, RayRuntime())


def run(config: dict, rt: Runtime) -> dict[str, Any]:
    """Train (or resume, or re-report a finished run) and return the final metrics."""
    entered = time.time()  # the loop's start event says how long imports, data and model took
    trial = TrialConfig.from_dict(config["trial"]).validate()
    loop = _Loop(trial, rt, config)
    return loop.run(entered)


def evaluate_stopped(config: dict, checkpoint_dir: str, rt: Runtime) -> dict[str, Any]:
    """A fine-tuning run stopped early (by a scheduler such as ASHA): the final metrics it would have
    reported, from its checkpoint — the last report's metrics plus the test metrics of its
    best-VALIDATION model (never selected on test), `status="stopped"`, `final=True`."""
    trial = TrialConfig.from_dict(config["trial"]).validate()
    lp = _Loop(trial, rt, config)
    if lp.obj.name != "cls":
        raise ConfigError("evaluate_stopped: only fine-tuning (cls) runs are stopped early")
    state = C.load_state(checkpoint_dir)
    if state.get("identity") not in (None, trial.identity()):
        raise ConfigError(f"evaluate_stopped: {checkpoint_dir} belongs to another trial config")
    lp._datasets()
    from gdna.models.build import build_model

    _seed_everything(lp.cfg.seed)
    model = build_model(lp.model_cfg, lp.obj.head)
    best = state.get("best")
    model.load_state_dict(best["model"] if best else state["model"])
    lp.model = rt.prepare_model(model)
    history = state.get("history") or []
    m = {k: v for k, v in (history[-1] if history else {}).items()}
    m.update({"epoch": state.get("epoch", 0), "step": state.get("step", 0), "status": "stopped", "final": True,
              "time_train_s": float(state.get("time_train_s", 0.0))})
    test = lp._eval(lp.test_ds)
    m.update({"test_acc": test["acc"], "test_loss": test["loss"],
              "best_val_acc": best["value"] if best else float("nan"), "best_epoch": best["at"] if best else 0,
              **{f"test_{k}": v for k, v in test.get("classes", {}).items()}})
    return {k: _plain(v) for k, v in m.items()}


# ---------------------------------------------------------------------------------------------
class _Loop:
    def __init__(self, trial: TrialConfig, rt: Runtime, config: dict):
        self.trial, self.rt, self.cfg = trial, rt, trial.train
        self.verbose = bool(config.get("verbose", False))
        self.obj = OBJECTIVES[self.cfg.objective]
        self.local_batch, self.micro = B.per_worker_batch(self.cfg.batch_size, rt.world_size, self.cfg.micro_batch_size)
        # sequence-length warmup (clm only): [(first step, length)]; None when off
        self.seq_schedule = (B.seq_len_schedule(trial.data.context_len, self.cfg.seq_warmup_start, self.cfg.seq_warmup_steps)
                             if self.obj.name == "clm" and self.cfg.seq_warmup_start else None)
        # this attempt's seconds waiting on the data loader and inside _report (checkpoint + report): the end event
        self.time_data_wait = self.time_report = 0.0
        self.n_reports = 0

    # -- setup ----------------------------------------------------------------------------------
    def _datasets(self) -> None:
        self.train_ds, self.val_ds, self.test_ds, self.model_cfg = self.obj.datasets(self.trial, self.cfg.seed)
        self.collate = self.obj.collate()

    def _build(self, resume: dict | None) -> None:
        if resume is None:
            model = initial_model(self.trial, self.model_cfg)
        else:
            from gdna.models.build import build_model

            _seed_everything(self.cfg.seed)
            model = build_model(self.model_cfg, self.obj.head)
            model.load_state_dict(resume["model"])
        self.model = model
        self.ddp = self.rt.prepare_model(model)  # moves to the device; DDP-wraps when world_size > 1
        self.optimizer = build_optimizer(model, self.cfg)
        self.scheduler = build_scheduler(self.optimizer, self.cfg, self.total_steps)
        use_scaler = self.cfg.precision == "fp16" and self.rt.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda" if use_scaler else "cpu", enabled=use_scaler)
        if resume is not None:
            self.optimizer.load_state_dict(resume["optimizer"])
            self.scheduler.load_state_dict(resume["scheduler"])
            if resume.get("scaler") and use_scaler:
                self.scaler.load_state_dict(resume["scaler"])
            C.restore_rng(resume["rng"])
        self.model.train()

    # -- main -------------------------------------------------------------------------------------
    def _load_resume(self) -> dict | None:
        """The newest checkpoint that loads: a truncated or corrupted one is skipped (an event says which
        and why) for the one before it; none left → a fresh start, never a crash loop."""
        with self.rt.resume_dir() as newest:
            if not newest:
                return None
            for path in [newest, *C.older_checkpoints(newest)]:
                try:
                    return C.load_state(path)
                except Exception as e:  # noqa: BLE001 - any unreadable state: torn zip, bad pickle, wrong format
                    self._event({"event": "unreadable_checkpoint", "path": str(path),
                                 "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"})
        self._event({"event": "restart", "why": "no readable checkpoint"})
        return None

    def run(self, entered: float | None = None) -> dict[str, Any]:
        resume = self._load_resume()
        if resume is not None:
            if resume.get("identity") not in (None, self.trial.identity()):
                raise ConfigError(
                    "resume: the run's checkpoint belongs to another trial config; use a new run name"
                )
            if resume.get("done"):
                final = dict(resume["final"])
                self._event({"event": "rereport", "status": final.get("status")})
                self.rt.report(final, None)
                return final
        self._datasets()
        self.n_train = len(self.train_ds)
        if self.n_train < self.rt.world_size:
            raise ConfigError(f"data: only {self.n_train} training examples for {self.rt.world_size} workers")
        self.spe = B.steps_per_epoch(self.n_train, self.cfg.batch_size, self.rt.world_size)
        self.total_steps = self.obj.total_steps(self)
        self._build(resume)
        s = resume or {}
        self.epoch = int(s.get("epoch", 0))
        self.pos = int(s.get("pos", 0))
        self.step = int(s.get("step", 0))
        self.best = s.get("best")
        self.bad_epochs = int(s.get("bad_epochs", 0))
        self.history = list(s.get("history", []))
        self.time_train = float(s.get("time_train_s", 0.0))
        self.tokens_seen = int(s.get("tokens_seen", 0))
        from gdna.models.build import count_backbone_params

        dims = self.model.dims
        self.size = {"n_params": count_backbone_params(dataclasses.replace(self.model_cfg, dropout=0.0), dims),
                     "d_model": dims.d_model, "n_layers": dims.n_layers}
        self._event({
            "event": "start",
            "resumed_from": getattr(self, self.obj.progress) if resume is not None else None,
            "objective": self.obj.name,
            "world_size": self.rt.world_size,
            "pid": os.getpid(),  # the process training (rank 0): what to look at, or signal, from outside
            "entered": entered,
            **self.size,
        })
        final = self.obj.run(self)
        self._event({"event": "end", "status": final.get("status"), "train_s": self.time_train,
                     "data_wait_s": self.time_data_wait, "report_s": self.time_report, "reports": self.n_reports})
        return final

    def _final_metrics(self, acc: dict, status: str, last: dict | None, val_metric: str) -> dict[str, Any]:
        """The last report's metrics (either objective), marked final; a diverged run has no train loss."""
        m = {**self.size, **(last or {})}
        m.update({"epoch": self.epoch, "step": self.step, "lr": self._lr(), "status": status, "final": True})
        m.setdefault("train_loss", acc["loss"])
        m.setdefault("val_loss", float("nan"))
        m.setdefault(val_metric, float("nan"))
        m.setdefault("tokens_per_s", acc.get("tokens_per_s", 0.0))
        if status == "diverged":
            m["train_loss"] = float("nan")
        return m

    # -- shared pieces --------------------------------------------------------------------------------
    def _train_steps(self, plan: list[tuple[int, list[np.ndarray]]]) -> dict[str, Any]:
        """Run optimizer steps for `plan`; returns mean train loss (global), steps, tokens/s, diverged."""
        cfg, rt = self.cfg, self.rt
        pending = getattr(self, "_pending_clm", None)
        self._pending_clm = None
        loss_sum = pending["loss_sum"] if pending else 0.0
        count = pending["count"] if pending else 0
        tokens = pending["tokens"] if pending else 0
        elapsed = pending["elapsed"] if pending else 0.0
        flat = [mb for _, mbs in plan for mb in mbs]
        it = B.loader(self.train_ds, flat, self.collate, cfg.loader_workers)
        steps, diverged = 0, False
        t0 = time.perf_counter()
        for gsize, mbs in plan:
            td = time.perf_counter()
            micro_batches = [next(it) for _ in mbs]
            self.time_data_wait += time.perf_counter() - td
            if self.seq_schedule is not None:  # warmup: the step's windows cut to its length, same tokens
                length = B.seq_len_at(self.seq_schedule, self.step)
                micro_batches = [B.cut_clm_batch(b, length) for b in micro_batches]
            gcount = self.obj.global_count(self, micro_batches, gsize)
            tokens += sum(batch_tokens(self.obj.name, b) for b in micro_batches)
            mean, diverged = train_step(
                self.ddp, micro_batches, objective=self.obj.name, global_count=gcount, rt=rt,
                optimizer=self.optimizer, scheduler=self.scheduler, scaler=self.scaler,
                grad_clip=cfg.grad_clip, precision=cfg.precision,
            )
            steps += 1
            if diverged:
                break
            self.step += 1
            loss_sum += mean * gcount
            count += gcount
            self.tokens_seen += gcount if self.obj.name == "clm" else 0
        del it
        dt = time.perf_counter() - t0
        elapsed += dt
        self.time_train += dt
        out = {"loss": loss_sum / count if count else float("nan"), "steps": steps, "diverged": diverged,
               "tokens_per_s": tokens * rt.world_size / elapsed if elapsed > 0 else 0.0,
               "loss_sum": loss_sum, "count": count, "tokens": tokens, "elapsed": elapsed}
        return out

    def _eval(self, ds) -> dict[str, float]:
        idx = B.eval_shard(len(ds), self.rt.world_size, self.rt.rank)
        chunks = [idx[i : i + self.micro] for i in range(0, len(idx), self.micro)]
        return evaluate(self.model, B.loader(ds, chunks, self.collate, 0), objective=self.obj.name, rt=self.rt,
                        precision=self.cfg.precision)

    def _lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _report(self, metrics: dict[str, Any], final: bool = False, model_state: dict | None = None) -> None:
        """Every rank reports; rank 0 attaches the checkpoint (the `done` one for the final report)."""
        t0 = time.perf_counter()
        try:
            self._report_timed(metrics, final, model_state)
        finally:
            self.time_report += time.perf_counter() - t0
            self.n_reports += 1

    def _report_timed(self, metrics: dict[str, Any], final: bool, model_state: dict | None) -> None:
        metrics = {k: _plain(v) for k, v in {**self.size, **metrics}.items()}
        self.history.append(metrics)
        ckpt_dir = None
        if self.rt.rank == 0:
            ckpt_dir = tempfile.mkdtemp(prefix="gdna-ckpt-")
            C.save_state(ckpt_dir, {
                "identity": self.trial.identity(), "objective": self.obj.name, "model_config": to_dict(self.model_cfg),
                "epoch": self.epoch, "pos": self.pos, "step": self.step,
                "model": model_state if model_state is not None else C.cpu_state_dict(self.model),
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
                "rng": C.capture_rng(), "best": self.best, "bad_epochs": self.bad_epochs,
                "history": self.history, "time_train_s": self.time_train, "tokens_seen": self.tokens_seen,
                "done": final, "final": metrics if final else None,
            })
            if self.verbose:
                # sys.stdout, not print: Train V2 patches print() into its logger, which echoes twice
                sys.stdout.write("[gdna.train] " + " ".join(f"{k}={_fmt(v)}" for k, v in metrics.items()) + "\n")
                sys.stdout.flush()
        try:
            self.rt.report(metrics, ckpt_dir)
        finally:
            if ckpt_dir:
                shutil.rmtree(ckpt_dir, ignore_errors=True)

    def _event(self, e: dict[str, Any]) -> None:
        if self.rt.rank == 0:
            self.rt.log_event({**e, "time": time.time(), "identity": self.trial.identity()})


# ---------------------------------------------------------------------------------------------
class Classification:
    """Fine-tuning (objective `cls`): epochs, validation accuracy, test of the best-validation model."""

    name, head, progress = "cls", "cls", "epoch"

    def datasets(self, trial: TrialConfig, seed: int) -> tuple[Any, Any, Any, ModelConfig]:
        from gdna.data.tasks import classification_datasets

        train_ds, val_ds, test_ds, n_classes = classification_datasets(trial.data, seed)
        return train_ds, val_ds, test_ds, dataclasses.replace(trial.model, n_classes=int(n_classes))

    def collate(self) -> Callable[[list], Any]:
        from gdna.data.tasks import collate_cls

        return collate_cls

    def total_steps(self, lp: "_Loop") -> int:
        return lp.cfg.epochs * lp.spe

    def global_count(self, lp: "_Loop", micro_batches: list, group_size: int) -> int:
        return group_size  # examples of the global batch

    def run(self, lp: "_Loop") -> dict[str, Any]:
        cfg, rt = lp.cfg, lp.rt
        while lp.epoch < cfg.epochs:
            plan = B.rank_plan(lp.n_train, cfg.batch_size, rt.world_size, rt.rank, lp.micro, cfg.seed, lp.epoch)
            acc = lp._train_steps(plan)
            lp.epoch += 1
            if acc["diverged"]:
                return self.finish(lp, acc, status="diverged")
            val = lp._eval(lp.val_ds)
            m = {
                "epoch": lp.epoch, "step": lp.step, "train_loss": acc["loss"], "val_loss": val["loss"],
                "val_acc": val["acc"], "lr": lp._lr(), "tokens_per_s": acc["tokens_per_s"], "status": "running",
                "final": False,
            }
            if not math.isfinite(val["loss"]):
                return self.finish(lp, acc, status="diverged", last=m)
            if lp.best is None or val["acc"] > lp.best["value"]:
                lp.best = {"value": val["acc"], "loss": val["loss"], "at": lp.epoch, "model": C.cpu_state_dict(lp.model)}
                lp.bad_epochs = 0
            else:
                lp.bad_epochs += 1
            stop = lp.epoch >= cfg.epochs or (cfg.patience is not None and lp.bad_epochs >= cfg.patience)
            if stop:
                return self.finish(lp, acc, status="finished", last=m)
            lp._report(m)
        return self.finish(lp, {"loss": float("nan"), "tokens_per_s": 0.0}, status="finished",
                           last=lp.history[-1] if lp.history else {})

    def finish(self, lp: "_Loop", acc: dict, status: str, last: dict | None = None) -> dict[str, Any]:
        last_state = C.cpu_state_dict(lp.model)
        m = lp._final_metrics(acc, status, last, "val_acc")
        if lp.best is not None:
            lp.model.load_state_dict(lp.best["model"])
            test = lp._eval(lp.test_ds)
            m.update({"test_acc": test["acc"], "test_loss": test["loss"], "best_val_acc": lp.best["value"],
                      "best_epoch": lp.best["at"], **{f"test_{k}": v for k, v in test.get("classes", {}).items()}})
        else:
            m.update({"test_acc": float("nan"), "test_loss": float("nan"), "best_val_acc": float("nan"), "best_epoch": 0})
        m["time_train_s"] = lp.time_train
        lp._report(m, final=True, model_state=last_state)
        return m


class CausalLM:
    """Pretraining (objective `clm`): optimizer steps, validation loss, export of the best model."""

    name, head, progress = "clm", "lm", "step"

    def datasets(self, trial: TrialConfig, seed: int) -> tuple[Any, Any, Any, ModelConfig]:
        from gdna.data.corpora import clm_datasets

        from gdna.data.corpora import clm_test_dataset

        train_ds, val_ds = clm_datasets(trial.data, seed)
        return train_ds, val_ds, clm_test_dataset(trial.data, seed), trial.model

    def collate(self) -> Callable[[list], Any]:
        from gdna.data.corpora import collate_clm

        return collate_clm

    def total_steps(self, lp: "_Loop") -> int:
        return lp.cfg.max_steps

    def global_count(self, lp: "_Loop", micro_batches: list, group_size: int) -> int:
        """Target tokens of the global batch: one tiny all-reduce (a no-op on one worker)."""
        local = torch.tensor([float(sum(batch_count("clm", b) for b in micro_batches))], dtype=torch.float64)
        return int(lp.rt.all_reduce_sum(local if lp.rt.device.type == "cpu" else local.to(lp.rt.device)).item())

    def run(self, lp: "_Loop") -> dict[str, Any]:
        cfg, rt = lp.cfg, lp.rt
        while lp.step < cfg.max_steps:
            if hasattr(lp.train_ds, "set_epoch"):
                lp.train_ds.set_epoch(lp.epoch)
            plan = B.rank_plan(len(lp.train_ds), cfg.batch_size, rt.world_size, rt.rank, lp.micro, cfg.seed, lp.epoch)
            if lp.pos >= len(plan):
                lp.epoch, lp.pos = lp.epoch + 1, 0
                continue
            remaining = plan[lp.pos:]
            # stop this pass at the next evaluation point (then re-plan; cheap, pure index math)
            until_eval = cfg.eval_every - lp.step % cfg.eval_every
            chunk = remaining[: min(until_eval, cfg.max_steps - lp.step)]
            acc = lp._train_steps(chunk)
            lp.pos += acc["steps"]
            if acc["diverged"]:
                return self.finish(lp, acc, status="diverged")
            if lp.step % cfg.eval_every == 0 or lp.step >= cfg.max_steps:
                val = lp._eval(lp.val_ds)
                m = {
                    "step": lp.step, "epoch": lp.epoch, "train_loss": acc["loss"], "val_loss": val["loss"],
                    "val_ppl": val["ppl"], "lr": lp._lr(), "tokens_per_s": acc["tokens_per_s"],
                    "tokens_seen": lp.tokens_seen, "seq_len": B.seq_len_at(lp.seq_schedule, lp.step - 1)
                    if lp.seq_schedule else lp.trial.data.context_len, "status": "running", "final": False,
                }
                if not math.isfinite(val["loss"]):
                    return self.finish(lp, acc, status="diverged", last=m)
                if lp.best is None or val["loss"] < lp.best["value"]:
                    lp.best = {"value": val["loss"], "at": lp.step, "model": C.cpu_state_dict(lp.model)}
                if lp.step >= cfg.max_steps:
                    return self.finish(lp, acc, status="finished", last=m)
                lp._report(m)
            else:
                lp._pending_clm = acc  # the pass ended between evaluations: carry the loss sums on
        return self.finish(lp, {"loss": float("nan"), "tokens_per_s": 0.0}, status="finished",
                           last=lp.history[-1] if lp.history else {})

    def finish(self, lp: "_Loop", acc: dict, status: str, last: dict | None = None) -> dict[str, Any]:
        m = lp._final_metrics(acc, status, last, "val_ppl")
        if lp.best is not None:
            m.update({"best_val_loss": lp.best["value"], "best_val_ppl": perplexity(lp.best["value"]),
                      "best_step": lp.best["at"]})
            if lp.test_ds is not None:  # the corpus has a test split (the genome's BED): the best model on it
                lp.model.load_state_dict(lp.best["model"])
                test = lp._eval(lp.test_ds)
                m.update({"test_loss": test["loss"], "test_ppl": test["ppl"]})
        else:
            m.update({"best_val_loss": float("nan"), "best_val_ppl": float("nan"), "best_step": 0})
        m["time_train_s"], m["tokens_seen"] = lp.time_train, lp.tokens_seen
        m["export_path"] = _export(lp, m) if lp.best is not None and lp.trial.export_dir else None
        lp._report(m, final=True)
        return m


OBJECTIVES = {o.name: o for o in (Classification(), CausalLM())}


def _export(lp: "_Loop", metrics: dict) -> str:
    """Rank 0 writes <export_dir>/backbone.pt then done.json (gdna.train.export); every rank returns the path."""
    from gdna.train.export import export_file

    if lp.rt.rank == 0:
        backbone = {k[len("backbone."):]: v for k, v in lp.best["model"].items() if k.startswith("backbone.")}
        if not backbone:
            raise RuntimeError("export: the model has no `backbone.` parameters (gdna.models contract)")
        write_export(lp.trial.export_dir, backbone, metrics, to_dict(lp.model_cfg), lp.trial.identity(), lp.trial.to_dict())
    return str(export_file(lp.trial.export_dir))


# ---------------------------------------------------------------------------------------------
def initial_model(trial: TrialConfig, model_cfg: ModelConfig | None = None) -> torch.nn.Module:
    """The model a fresh run starts from: built under `train.seed`, then (fine-tuning from a
    pretraining) the exported backbone of `trial.init_checkpoint` loaded, with a fresh head."""
    from gdna.models.build import build_model, load_backbone

    cfg = model_cfg or trial.model
    payload = _init_payload(trial, cfg)
    _seed_everything(trial.train.seed)
    model = build_model(cfg, OBJECTIVES[trial.train.objective].head)
    if payload is not None:
        try:
            load_backbone(model, payload["backbone"])
        except (RuntimeError, KeyError) as e:
            raise ConfigError(f"init_checkpoint: {trial.init_checkpoint} does not fit the model: {str(e).splitlines()[0]}") from e
    return model


def _init_payload(trial: TrialConfig, cfg: ModelConfig) -> dict | None:
    path = trial.init_checkpoint
    if not path:
        return None
    if not Path(path).is_file():
        raise ConfigError(f"init_checkpoint: file not found: {path}")
    payload = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(payload, dict) or "backbone" not in payload:
        raise ConfigError(f"init_checkpoint: {path} is not a gdna backbone export (no 'backbone' key)")
    arch = (payload.get("model_config") or {}).get("arch", cfg.arch)
    if arch != cfg.arch:
        raise ConfigError(f"init_checkpoint: {path} holds a {arch} backbone, the trial is model.arch={cfg.arch}")
    return payload


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _plain(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.item()
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    return v


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
