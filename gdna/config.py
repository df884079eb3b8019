"""Typed configuration: one frozen dataclass per concept, the paper's defaults in exactly one place.

Every config round-trips through plain dicts (`to_dict` / `from_dict`) so that it can travel in a
Ray Tune param_space, be logged to MLflow as params and be hashed into a stable identity.
`from_dict` is strict: an unknown key or a value of the wrong type raises ConfigError naming the
dotted key, e.g. "model.arch: unknown architecture 'mambo' (choose from transformer, hyena, mamba)".
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from gdna.errors import ConfigError

# ---------------------------------------------------------------------------------------------
# Vocabulary of the study
ARCHITECTURES = ("transformer", "hyena", "mamba")
STRATEGIES = ("scratch", "hg38", "task_spt", "domain_spt")
# which pretraining corpus each strategy needs (scratch needs none)
CORPUS_OF_STRATEGY = {"hg38": "genome", "task_spt": "task", "domain_spt": "domain"}
CORPORA = ("genome", "task", "domain")
GREATAPES_TASK = "greatapes"  # task name of great-ape species classification (data in <data_root>/greatapes/)
OBJECTIVES = ("cls", "clm")
PRECISIONS = ("fp32", "bf16", "fp16")
POOLINGS = ("mean", "last")

# The paper's grids and recipe (the only place these numbers live)
PAPER_LRS = (1e-4, 3e-4, 9e-4, 2.7e-3)
PAPER_BATCH_SIZES = (128, 256)
PAPER_SEEDS = (0, 1, 2, 3, 4)
PAPER_PARAM_BUDGET = 1_600_000
PAPER_N_LAYERS = 2
PAPER_FINETUNE_EPOCHS = 10
PAPER_SCRATCH_MAX_EPOCHS = 200
PAPER_SCRATCH_PATIENCE = 10
PAPER_PRETRAIN_STEPS = 10_000


def default_data_root() -> str:
    """GDNA_DATA_ROOT, else ../shared/data beside the current directory."""
    return os.environ.get("GDNA_DATA_ROOT") or str(Path("../shared/data").resolve())


def greatapes_fastas(data_root: str | os.PathLike) -> list[Path]:
    """The great-ape species FASTAs, <data_root>/greatapes/*.fa, sorted (species i = label i); [] if none."""
    folder = Path(data_root) / GREATAPES_TASK
    return sorted(folder.glob("*.fa")) if folder.is_dir() else []


# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelConfig:
    """A backbone + head. Width comes from `d_model` if set, else from the parameter-budget solver."""

    arch: str = "transformer"  # transformer | hyena | mamba
    n_layers: int = PAPER_N_LAYERS
    param_budget: int = PAPER_PARAM_BUDGET  # total trainable parameters the width solver aims at (±3%)
    d_model: int | None = None  # explicit width (e.g. 128 or 256) instead of the budget
    vocab_size: int = 16  # gdna.data.tokenizer.VOCAB_SIZE
    dropout: float = 0.0
    # transformer
    n_heads: int = 8
    mlp: str = "swiglu"  # swiglu | gelu
    # hyena
    hyena_order: int = 2
    hyena_filter_dim: int = 64  # width of the implicit filter MLP
    hyena_short_conv: int = 3
    # mamba
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    # classification head
    pooling: str = "mean"  # mean (masked) | last (last real token)
    n_classes: int = 2

    def validate(self, where: str = "model") -> "ModelConfig":
        _choice(f"{where}.arch", self.arch, ARCHITECTURES, "architecture")
        _choice(f"{where}.pooling", self.pooling, POOLINGS, "pooling")
        _choice(f"{where}.mlp", self.mlp, ("swiglu", "gelu"), "mlp")
        _positive(f"{where}.n_layers", self.n_layers)
        _positive(f"{where}.param_budget", self.param_budget)
        if self.d_model is not None:
            _positive(f"{where}.d_model", self.d_model)
            if self.arch == "transformer" and self.d_model % self.n_heads:
                raise ConfigError(f"{where}.d_model: {self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.n_classes < 2:
            raise ConfigError(f"{where}.n_classes: must be ≥ 2, got {self.n_classes}")
        return self


@dataclass(frozen=True)
class DataConfig:
    """Where examples come from. Paths inside are relative to `data_root` unless absolute."""

    data_root: str = ""  # "" → default_data_root() at use time
    task: str | None = None  # Genomic Benchmarks task (fine-tuning, and the task_spt corpus)
    corpus: str = "genome"  # CLM pretraining corpus: genome | task | domain
    domain_tasks: tuple[str, ...] = ()  # tasks whose train splits form the domain_spt corpus
    genome_fasta: str = "genome/chr20.fa"
    genome_bed: str = "genome/intervals_1mb.bed"
    context_len: int = 1024  # CLM window length in tokens
    windows_per_epoch: int = 8192  # genome CLM: windows sampled per pass (reproducible from seed, epoch)
    eval_windows: int = 256  # genome CLM: fixed validation windows
    max_len: int | None = None  # fine-tuning: truncate to this; None → the task's longest sequence
    n_folds: int = 5  # train/val split: fold `fold` of n_folds (seeded); n_folds=1 → val_fraction
    fold: int = 0
    val_fraction: float = 0.1
    max_train_examples: int | None = None  # seeded subsample, for small runs and tests
    max_eval_examples: int | None = None

    def root(self) -> Path:
        return Path(self.data_root or default_data_root())

    def path(self, rel: str) -> Path:
        p = Path(rel)
        return p if p.is_absolute() else self.root() / p

    def validate(self, where: str = "data") -> "DataConfig":
        _choice(f"{where}.corpus", self.corpus, CORPORA, "corpus")
        _positive(f"{where}.context_len", self.context_len)
        _positive(f"{where}.n_folds", self.n_folds)
        if not 0 <= self.fold < self.n_folds:
            raise ConfigError(f"{where}.fold: {self.fold} is outside 0..{self.n_folds - 1}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"{where}.val_fraction: must be in (0, 1), got {self.val_fraction}")
        return self


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation recipe (paper defaults). `batch_size` is global, whatever the worker count."""

    objective: str = "cls"  # cls (fine-tuning) | clm (pretraining)
    lr: float = 1e-3
    batch_size: int = 128  # global batch size
    micro_batch_size: int | None = None  # per-worker per-step cap; gradient accumulation fills the rest
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_frac: float = 0.1  # linear warmup over this fraction of all optimizer steps
    min_lr: float = 1e-6  # cosine decays to this
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    epochs: int = PAPER_FINETUNE_EPOCHS  # cls: number of epochs (max epochs with early stopping)
    patience: int | None = None  # cls: stop after this many epochs without a better val accuracy
    max_steps: int = PAPER_PRETRAIN_STEPS  # clm: optimizer steps
    eval_every: int = 500  # clm: validate + checkpoint every N optimizer steps
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast, CUDA only; CPU always runs fp32)
    seed: int = 0  # model init, data order and (with data.fold) the train/val split
    loader_workers: int = 0  # torch DataLoader worker processes per Ray worker

    def validate(self, where: str = "train") -> "TrainConfig":
        _choice(f"{where}.objective", self.objective, OBJECTIVES, "objective")
        _choice(f"{where}.precision", self.precision, PRECISIONS, "precision")
        if not self.lr > 0:
            raise ConfigError(f"{where}.lr: must be > 0, got {self.lr}")
        _positive(f"{where}.batch_size", self.batch_size)
        _positive(f"{where}.epochs", self.epochs)
        _positive(f"{where}.max_steps", self.max_steps)
        _positive(f"{where}.eval_every", self.eval_every)
        if not 0.0 <= self.warmup_frac < 1.0:
            raise ConfigError(f"{where}.warmup_frac: must be in [0, 1), got {self.warmup_frac}")
        return self


def finetune_recipe(strategy: str, **overrides: Any) -> TrainConfig:
    """The paper's fine-tuning recipe: 10 epochs after pretraining; from scratch up to 200 with early stopping."""
    if strategy == "scratch":
        base = TrainConfig(objective="cls", epochs=PAPER_SCRATCH_MAX_EPOCHS, patience=PAPER_SCRATCH_PATIENCE)
    else:
        base = TrainConfig(objective="cls", epochs=PAPER_FINETUNE_EPOCHS)
    return dataclasses.replace(base, **overrides)


@dataclass(frozen=True)
class ResourcesConfig:
    """Ray resources. Fractions are allowed (2-core laptops); on a GPU cluster set gpus_per_worker: 1."""

    workers_per_trial: int = 1  # Ray Train DDP workers per trial
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    cpus_per_trial: float = 0.1  # the Tune function trainable that drives the TorchTrainer
    max_concurrent_trials: int = 0  # 0 → as many as resources allow
    max_failures: int = 1  # Ray Train worker-group restarts per trial, from the last checkpoint

    def validate(self, where: str = "resources") -> "ResourcesConfig":
        _positive(f"{where}.workers_per_trial", self.workers_per_trial)
        for k in ("cpus_per_worker", "cpus_per_trial"):
            if not getattr(self, k) > 0:
                raise ConfigError(f"{where}.{k}: must be > 0 (Ray rejects 0-CPU trials), got {getattr(self, k)}")
        if self.gpus_per_worker < 0:
            raise ConfigError(f"{where}.gpus_per_worker: must be ≥ 0, got {self.gpus_per_worker}")
        if self.max_concurrent_trials < 0:
            raise ConfigError(f"{where}.max_concurrent_trials: must be ≥ 0, got {self.max_concurrent_trials}")
        return self


@dataclass(frozen=True)
class TrialConfig:
    """Everything one trial (one TorchTrainer run) needs. Its hash is the trial's identity."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    init_checkpoint: str | None = None  # pretrained backbone file (fine-tuning from a pretraining)
    export_dir: str | None = None  # rank 0 writes the best model here at the end (pretraining results)

    def validate(self) -> "TrialConfig":
        self.model.validate()
        self.data.validate()
        self.train.validate()
        if self.train.objective == "cls" and not self.data.task:
            raise ConfigError("data.task: a classification trial needs a Genomic Benchmarks task")
        return self

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrialConfig":
        return from_dict(cls, d)

    def identity(self) -> str:
        """Content hash of the resolved config (data_root excluded: the same data may live elsewhere)."""
        d = self.to_dict()
        d["data"] = {k: v for k, v in d["data"].items() if k != "data_root"}
        return config_hash(d)


# ---------------------------------------------------------------------------------------------
# Generic strict dict <-> dataclass conversion, shared by every config (sweep specs included).


def to_dict(obj: Any) -> Any:
    """Dataclass (nested) → plain JSON-able dict; tuples become lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(x) for x in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def from_dict(cls: type, d: Any, where: str = "") -> Any:
    """Plain dict → dataclass `cls`, strictly: unknown keys and wrong types raise ConfigError naming the key."""
    if d is None:
        d = {}
    if not isinstance(d, Mapping):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise ConfigError(f"{key}: unknown key (valid keys: {', '.join(sorted(names))})")
    kwargs = {}
    for name, value in d.items():
        key = f"{where}.{name}" if where else name
        kwargs[name] = _coerce(hints[name], value, key)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{key}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)] if args else list(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value


def config_hash(d: Any, n: int = 12) -> str:
    """Stable short hash of a JSON-able value (key order does not matter)."""
    blob = json.dumps(to_dict(d), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:n]


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 1e-3}} → {"train.lr": 1e-3} (for MLflow params)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _choice(key: str, value: Any, choices: tuple, what: str) -> None:
    if value not in choices:
        raise ConfigError(f"{key}: unknown {what} {value!r} (choose from {', '.join(choices)})")


def _positive(key: str, value: Any) -> None:
    if not (isinstance(value, (int, float)) and value > 0):
        raise ConfigError(f"{key}: must be > 0, got {value!r}")
