"""Typed configuration: one frozen dataclass per concept, the paper's defaults in exactly one place.

Every config round-trips through plain dicts (`to_dict` / `from_dict`) so that it can travel in a
Ray Tune param_space, be logged to MLflow as params and be hashed into a stable identity.
`from_dict` is strict: an unknown key or a value of the wrong type raises ConfigError naming the
dotted key, e.g. "model.arch: unknown architecture 'mambo' (choose from ...)". Architectures, corpora and
strategies are looked up in `gdna.registry`; the paper's numbers (grids, seeds, budget, recipe,
pretraining) are defined here and used from here.
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
from gdna.fingerprint import file_fingerprint
from gdna.registry import ARCHITECTURES, CORPORA, STRATEGIES

# ---------------------------------------------------------------------------------------------
OBJECTIVES = ("cls", "clm")
PRECISIONS = ("fp32", "bf16", "fp16")
POOLINGS = ("mean", "last")

# The paper's grids and recipe (the only place these numbers live; search_spaces/paper_grid.yaml and the
# sweeps are checked against them by tests/test_config.py)
PAPER_LRS = (1e-4, 3e-4, 9e-4, 2.7e-3)
PAPER_BATCH_SIZES = (128, 256)
PAPER_SEEDS = (0, 1, 2, 3, 4)
PAPER_PARAM_BUDGET = 1_600_000
PAPER_N_LAYERS = 2
PAPER_FINETUNE_EPOCHS = 10  # fine-tuning after a pretraining
PAPER_SCRATCH_MAX_EPOCHS = 200  # from scratch: up to 200 epochs ...
PAPER_SCRATCH_PATIENCE = 10  # ... with early stopping on validation accuracy
PAPER_PRETRAIN_STEPS = 10_000
PAPER_PRETRAIN_LRS = (1e-3,)
PAPER_PRETRAIN_BATCH_SIZE = 256
PAPER_PRETRAIN_CONTEXT_LENS = (1024,)
# The Mamba paper's DNA scaling studies (section 4.3, Figures 5-6; sweeps/scaling_*.yaml, greatapes.yaml)
PAPER_SCALING_TOKENS_PER_BATCH = 2**20  # tokens per optimizer step, fixed in both scaling studies
PAPER_SCALING_SIZE_CONTEXT = 1024  # model-size scaling: context 2^10 ...
PAPER_SCALING_SIZE_STEPS = 10_000  # ... 10K steps x 2^20 tokens ≈ 10B tokens
PAPER_SCALING_PARAM_BUDGETS = (200_000, 450_000, 1_000_000, 2_500_000, 6_000_000, 15_000_000, 40_000_000)  # ≈200K..≈40M
PAPER_SCALING_CONTEXT_LENS = tuple(2**k for k in range(10, 21, 2))  # context scaling: 2^10, 2^12, ..., 2^20
PAPER_SCALING_CONTEXT_STEPS = 20_000  # 20K steps x 2^20 tokens (the paper: ≈330B tokens in all)
PAPER_SCALING_CONTEXT_N_LAYERS = 6  # fixed model: 6 layers x width 128 (≈1.3-1.4M parameters)
PAPER_SCALING_CONTEXT_D_MODEL = 128
PAPER_SEQ_WARMUP_START = 1024  # sequence-length warmup (HyenaDNA-style): start at 2^10, double up to the target
PAPER_GREATAPES_LENS = tuple(2**k for k in range(10, 16))  # great apes by length: 2^10..2^15 here (paper: to 2^20)


def default_data_root() -> str:
    """GDNA_DATA_ROOT, else ../shared/data beside the current directory; made absolute here, in the caller's
    working directory (the sweep driver's: a Tune trial runs in another one)."""
    return str(Path(os.environ.get("GDNA_DATA_ROOT") or "../shared/data").expanduser().resolve())


# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelConfig:
    """A backbone + head. Width comes from `d_model` if set, else from the parameter-budget solver.

    The architecture's own keys (transformer `n_heads`, mamba `d_state`, ...) live in `settings`, the typed
    dataclass the architecture registers (gdna.registry); in dicts, YAML and MLflow params they sit flat
    beside the common keys (`model.d_state`)."""

    arch: str = ""  # a registered architecture (gdna.registry.ARCHITECTURES)
    n_layers: int = PAPER_N_LAYERS  # 0: the budget solver chooses the depth too (gdna.models.build)
    param_budget: int = PAPER_PARAM_BUDGET  # total trainable parameters the width solver aims at (±3%)
    d_model: int | None = None  # explicit width (e.g. 128 or 256) instead of the budget
    vocab_size: int = 16  # gdna.data.tokenizer.VOCAB_SIZE
    dropout: float = 0.0
    pooling: str = "mean"  # classification head: mean (masked) | last (last real token)
    n_classes: int = 2
    settings: Any = None  # the architecture's settings dataclass; None → its defaults

    def __post_init__(self) -> None:
        if self.settings is None and self.arch in ARCHITECTURES:
            object.__setattr__(self, "settings", ARCHITECTURES.get(self.arch).settings())

    def validate(self, where: str = "model") -> "ModelConfig":
        if not self.arch:
            raise ConfigError(f"{where}.arch: missing (choose from {', '.join(ARCHITECTURES.names())})")
        arch = ARCHITECTURES.get(self.arch, f"{where}.arch")
        if not isinstance(self.settings, arch.settings):
            raise ConfigError(f"{where}: settings of {type(self.settings).__name__} do not belong to {self.arch}")
        _choice(f"{where}.pooling", self.pooling, POOLINGS, "pooling")
        if self.n_layers == 0 and self.d_model is not None:
            raise ConfigError(f"{where}.n_layers: 0 (solver-chosen depth) needs the parameter budget, not an explicit d_model")
        if self.n_layers != 0:
            _positive(f"{where}.n_layers", self.n_layers)
        _positive(f"{where}.param_budget", self.param_budget)
        if self.d_model is not None:
            _positive(f"{where}.d_model", self.d_model)
        problem = arch.check(self.settings, self.d_model)
        if problem:
            raise ConfigError(problem.replace("model.", f"{where}.", 1))
        if self.n_classes < 2:
            raise ConfigError(f"{where}.n_classes: must be ≥ 2, got {self.n_classes}")
        return self

    # flat dicts: common keys and the architecture's own keys side by side ------------------------
    @classmethod
    def _from_dict(cls, d: Mapping[str, Any], where: str) -> "ModelConfig":
        where = where or "model"
        common = [f.name for f in dataclasses.fields(cls) if f.name != "settings"]
        known = model_keys()
        for k in d:
            if k not in known:
                raise ConfigError(f"{where}.{k}: unknown key (valid keys: {', '.join(sorted(known))})")
        name = d.get("arch") or ""
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}.arch: missing (choose from {', '.join(ARCHITECTURES.names())})")
        arch = ARCHITECTURES.get(name, f"{where}.arch")
        own = [f.name for f in dataclasses.fields(arch.settings)]
        for k in d:
            if k not in common and k not in own:
                raise ConfigError(f"{where}.{k}: not a key of architecture {name} "
                                  f"(its keys: {', '.join(sorted(common + own))})")
        base = _from_fields(cls, {k: v for k, v in d.items() if k in common}, where)
        settings = _from_fields(arch.settings, {k: v for k, v in d.items() if k in own}, where)
        return dataclasses.replace(base, settings=settings)

    def _to_dict(self) -> dict[str, Any]:
        d = {f.name: to_dict(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "settings"}
        d.update(to_dict(self.settings) if self.settings is not None else {})
        return d

    @classmethod
    def for_arch(cls, arch: str, overrides: Mapping[str, Any] | None = None, *, where: str = "model",
                 **keys: Any) -> "ModelConfig":
        """`arch` with a sweep's model overrides (and/or `keys`), which may hold other architectures' keys
        (they apply to those); a key that no registered architecture has is an error."""
        overrides = {**(overrides or {}), **keys}
        own = {f.name for f in dataclasses.fields(ARCHITECTURES.get(arch, f"{where}.arch").settings)}
        common = {f.name for f in dataclasses.fields(cls)} - {"settings"}
        known = set(common).union(*({f.name for f in dataclasses.fields(a.settings)} for a in ARCHITECTURES))
        for k in overrides:
            if k not in known:
                raise ConfigError(f"{where}.{k}: unknown key (valid keys: {', '.join(sorted(known))})")
        return from_dict(cls, {**{k: v for k, v in overrides.items() if k in common or k in own}, "arch": arch}, where)


def model_keys() -> set[str]:
    """Every key a model config may have: the common ones and each registered architecture's."""
    common = {f.name for f in dataclasses.fields(ModelConfig)} - {"settings"}
    return common.union(*({f.name for f in dataclasses.fields(a.settings)} for a in ARCHITECTURES))


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
    block_group: int = 1  # great apes: consecutive alignment blocks per split unit; > 1: segments may span the
    #                       blocks of one unit (their sequences joined in order), so lengths beyond one block fit
    max_train_examples: int | None = None  # seeded subsample, for small runs and tests
    max_eval_examples: int | None = None
    fingerprint: str = ""  # content fingerprint of the files this trial reads (gdna.data.fingerprint); part of
    #                        the identity, so the same data elsewhere keeps it and changed data does not

    def root(self) -> Path:
        return Path(self.data_root or default_data_root())

    def path(self, rel: str) -> Path:
        p = Path(rel)
        return p if p.is_absolute() else self.root() / p

    def validate(self, where: str = "data") -> "DataConfig":
        CORPORA.get(self.corpus, f"{where}.corpus")
        _positive(f"{where}.context_len", self.context_len)
        _positive(f"{where}.n_folds", self.n_folds)
        _positive(f"{where}.block_group", self.block_group)
        if not 0 <= self.fold < self.n_folds:
            raise ConfigError(f"{where}.fold: {self.fold} is outside 0..{self.n_folds - 1}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"{where}.val_fraction: must be in (0, 1), got {self.val_fraction}")
        _positive(f"{where}.windows_per_epoch", self.windows_per_epoch)
        _positive(f"{where}.eval_windows", self.eval_windows)
        for k in ("max_len", "max_train_examples", "max_eval_examples"):
            if getattr(self, k) is not None:
                _positive(f"{where}.{k}", getattr(self, k))
        return self


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation recipe (paper defaults). `batch_size` is global, whatever the worker count."""

    objective: str = "cls"  # cls (fine-tuning) | clm (pretraining)
    lr: float = 1e-3
    batch_size: int = 128  # global batch size
    micro_batch_size: int | None = None  # per-worker per-step cap; gradient accumulation fills the rest
    # sequence-length warmup (clm): the first optimizer steps train on windows of seq_warmup_start tokens, the
    # length doubling every seq_warmup_steps steps up to data.context_len; each window is cut into pieces, so
    # the tokens per optimizer step stay constant (gdna.train.batches.seq_len_schedule). 0 = off.
    seq_warmup_start: int = 0
    seq_warmup_steps: int = 0
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
        if self.seq_warmup_start < 0 or self.seq_warmup_steps < 0:
            raise ConfigError(f"{where}.seq_warmup_start / seq_warmup_steps: must be ≥ 0")
        if (self.seq_warmup_start > 0) != (self.seq_warmup_steps > 0):
            raise ConfigError(f"{where}.seq_warmup_steps: sequence-length warmup needs both seq_warmup_start and "
                              f"seq_warmup_steps > 0 (got {self.seq_warmup_start}, {self.seq_warmup_steps})")
        return self


def finetune_recipe(strategy: str, **overrides: Any) -> TrainConfig:
    """The strategy's fine-tuning recipe (gdna.strategies: 10 epochs after a pretraining; from scratch up to
    200 with early stopping), then `overrides`."""
    recipe = STRATEGIES.get(strategy, "strategies").recipe
    return dataclasses.replace(TrainConfig(objective="cls", **recipe), **overrides)


RUNNERS = ("train", "inline")  # ResourcesConfig.runner


@dataclass(frozen=True)
class ResourcesConfig:
    """Ray resources. Fractions are allowed (2-core laptops); on a GPU cluster set gpus_per_worker: 1.

    GPU packing: a single-worker trial may take a GPU fraction (0.25 → four 1.6M-parameter trials per
    GPU); DDP trials (workers_per_trial > 1) take whole GPUs (NCCL cannot share one GPU between ranks).
    """

    workers_per_trial: int = 1  # Ray Train DDP workers per trial
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    cpus_per_trial: float = 0.1  # the Tune function trainable that drives the TorchTrainer
    max_concurrent_trials: int = 0  # 0 → as many as resources allow (live cluster + autoscaler maximum)
    max_failures: int = 1  # Ray Train worker-group restarts per trial, from the last checkpoint
    # Where trial drivers (Tune trainable + Train controller) run: "auto" = on the nodes advertising
    # gdna_driver (cluster.yaml's head) when the cluster has it, anywhere otherwise; "" = anywhere;
    # another name = a custom resource of yours. A driver requests a sliver (0.001) of it.
    driver_resource: str = "auto"
    # How a trial trains: "train" = a Ray Train TorchTrainer (its own controller + worker processes, DDP);
    # "inline" = the same loop inside the Tune trial's own process, reused by the next trial (no process
    # starts per trial: the fast path for 1-worker trials); only with workers_per_trial 1.
    runner: str = "train"

    def validate(self, where: str = "resources") -> "ResourcesConfig":
        _positive(f"{where}.workers_per_trial", self.workers_per_trial)
        for k in ("cpus_per_worker", "cpus_per_trial"):
            if not getattr(self, k) > 0:
                raise ConfigError(f"{where}.{k}: must be > 0 (Ray rejects 0-CPU trials), got {getattr(self, k)}")
        if self.gpus_per_worker < 0:
            raise ConfigError(f"{where}.gpus_per_worker: must be ≥ 0, got {self.gpus_per_worker}")
        if self.gpus_per_worker > 0 and self.gpus_per_worker != int(self.gpus_per_worker):
            if self.workers_per_trial > 1:
                raise ConfigError(
                    f"{where}.gpus_per_worker: {self.gpus_per_worker:g} with workers_per_trial {self.workers_per_trial}: "
                    "DDP trials take whole GPUs (NCCL cannot share a GPU between ranks); fractions only for 1 worker")
            if self.gpus_per_worker > 1:
                raise ConfigError(f"{where}.gpus_per_worker: {self.gpus_per_worker:g}: more than one GPU must be a whole number")
        if self.driver_resource not in ("auto", "") and (
                not self.driver_resource.replace("_", "a").isalnum() or self.driver_resource in ("CPU", "GPU", "memory")):
            raise ConfigError(f"{where}.driver_resource: {self.driver_resource!r} is not a custom resource name ('auto', '' or e.g. gdna_driver)")
        if self.max_concurrent_trials < 0:
            raise ConfigError(f"{where}.max_concurrent_trials: must be ≥ 0, got {self.max_concurrent_trials}")
        if self.runner not in RUNNERS:
            raise ConfigError(f"{where}.runner: must be one of {', '.join(RUNNERS)}, got {self.runner!r}")
        if self.runner == "inline" and self.workers_per_trial != 1:
            raise ConfigError(f"{where}.runner: inline runs one worker in the trial's own process, but workers_per_trial "
                              f"is {self.workers_per_trial} (use runner: train for DDP trials)")
        return self


# Keys added after trials were stored: left out of the identity at their default, so every earlier trial
# and content-addressed pretraining keeps its key.
IDENTITY_LATER_KEYS = {"data": {"block_group": 1}, "train": {"seq_warmup_start": 0, "seq_warmup_steps": 0}}


@dataclass(frozen=True)
class TrialConfig:
    """Everything one trial (one TorchTrainer run) needs. Its hash is the trial's identity."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    init_checkpoint: str | None = None  # pretrained backbone file (fine-tuning from a pretraining)
    init_from: str | None = None  # the key (identity) of the pretraining that wrote init_checkpoint
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
        """THE trial identity: a content hash of the resolved config without locations (data_root,
        export_dir, the checkpoint's path: a pretraining is named by its key `init_from`, else by the
        file's content), with the data fingerprint. Run names, resume checks, MLflow and markers use it."""
        d = self.to_dict()
        d["data"] = {k: v for k, v in d["data"].items() if k != "data_root"}
        for section, keys in IDENTITY_LATER_KEYS.items():  # keys added later: at their default, not hashed
            for k, default in keys.items():
                if d[section].get(k) == default:
                    d[section].pop(k, None)
        d["export_dir"] = None
        if d["init_checkpoint"]:
            if d["init_from"]:
                d["init_checkpoint"] = f"pretrain:{d['init_from']}"
            else:
                d["init_checkpoint"] = f"file:{file_fingerprint(Path(self.init_checkpoint))}"
        return config_hash(d)


# ---------------------------------------------------------------------------------------------
# Generic strict dict <-> dataclass conversion, shared by every config (sweep specs included).


def to_dict(obj: Any) -> Any:
    """Dataclass (nested) → plain JSON-able dict; tuples become lists."""
    if hasattr(obj, "_to_dict") and not isinstance(obj, type):
        return obj._to_dict()
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
    if hasattr(cls, "_from_dict"):  # a config with its own flat layout (ModelConfig)
        return cls._from_dict(d, where)
    return _from_fields(cls, d, where)


def _from_fields(cls: type, d: Mapping[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
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
