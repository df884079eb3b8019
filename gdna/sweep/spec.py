"""Sweep specs (`sweeps/*.yaml`) and search spaces (`search_spaces/*.yaml`) → typed, validated configs.

Everything a sweep needs is checked here, before Ray starts: an unknown key, a bad value, an unknown
architecture / strategy / task, a missing search-space file or FASTA, an empty grid... each raises
ConfigError with one line naming the key (the CLI prints it and exits 2).

    name: quickstart
    tasks: [human_enhancers_cohn]
    architectures: [transformer, hyena, mamba]
    strategies: [scratch, task_spt]
    search_space: smoke             # search_spaces/smoke.yaml (or a path)
    model: {d_model: 32}            # ModelConfig overrides (both stages)
    data: {max_len: 128}            # DataConfig overrides (both stages)
    train: {epochs: 2}              # TrainConfig overrides on top of finetune_recipe(strategy)
    pretrain: {steps: 30, context_lens: [128], lrs: [1e-3], selection_metric: val_loss}
    resources: {workers_per_trial: 2, cpus_per_worker: 0.4}
    storage: runs                   # default runs/ ; tracking_uri default sqlite:///<storage>/sweeps/<name>/mlflow.db
"""
from __future__ import annotations

import dataclasses
import errno
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from gdna.config import (
    PAPER_PRETRAIN_BATCH_SIZE,
    PAPER_PRETRAIN_CONTEXT_LENS,
    PAPER_PRETRAIN_LRS,
    PAPER_PRETRAIN_STEPS,
    DataConfig,
    ModelConfig,
    ResourcesConfig,
    TrainConfig,
    default_data_root,
    from_dict,
    model_keys,
    to_dict,
)
from gdna.errors import ConfigError, GdnaError
from gdna.registry import ARCHITECTURES, STRATEGIES, corpus_of

REPO_ROOT = Path(__file__).resolve().parents[2]
SEARCHERS = ("grid", "random", "optuna")
# MLflow stores a sweep can log to (never a plain file store: one writer, no server, no search)
TRACKING_SCHEMES = ("sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")
SCHEDULERS = ("none", "asha")
SELECTION_METRICS = ("val_loss", "val_ppl")
DISTRIBUTIONS = ("loguniform", "uniform", "choice", "randint")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class SearchSpace:
    """The fine-tuning search space: grid axes × seeds × folds, or a random/Optuna searcher."""

    name: str = ""
    description: str = ""
    grid: dict[str, list] = field(default_factory=dict)  # dotted TrialConfig key → values (grid axes)
    seeds: tuple[int, ...] = (0,)  # train.seed values
    folds: tuple[int, ...] | str | None = None  # data.fold values (cross product); "paired": fold = seed % n_folds
    searcher: str = "grid"  # grid | random | optuna
    num_samples: int = 1  # random: samples per cell (arch × strategy × task × seed × fold); optuna: points per
    # tuning cell (arch × strategy × task), each evaluated on all its seeds/folds
    distributions: dict[str, dict] = field(default_factory=dict)  # key → {loguniform: [lo, hi]} | {choice: [...]}
    n_startup_trials: int = 10  # optuna: random points per cell before TPE takes over
    points_in_flight: int = 0  # optuna: points of one cell evaluated at once (0: enough to fill the cluster)

    def validate(self, where: str = "search_space") -> "SearchSpace":
        if self.searcher not in SEARCHERS:
            raise ConfigError(f"{where}.searcher: unknown searcher {self.searcher!r} (choose from {', '.join(SEARCHERS)})")
        if not self.seeds:
            raise ConfigError(f"{where}.seeds: empty list (give at least one seed)")
        if isinstance(self.folds, str) and self.folds != "paired":
            raise ConfigError(f"{where}.folds: expected a list of folds or 'paired', got {self.folds!r}")
        if isinstance(self.folds, tuple) and not self.folds:
            raise ConfigError(f"{where}.folds: empty list")
        for key, values in self.grid.items():
            _check_trial_key(f"{where}.grid.{key}", key)
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{where}.grid.{key}: empty grid axis (give a non-empty list of values)")
            for i, v in enumerate(values):
                _check_trial_value(f"{where}.grid.{key}[{i}]", key, v)
        if self.num_samples < 1:
            raise ConfigError(f"{where}.num_samples: must be ≥ 1, got {self.num_samples}")
        for k in ("n_startup_trials", "points_in_flight"):
            if getattr(self, k) < 0:
                raise ConfigError(f"{where}.{k}: must be ≥ 0, got {getattr(self, k)}")
        if self.searcher == "grid" and self.distributions:
            raise ConfigError(f"{where}.distributions: only used with searcher random|optuna (searcher is grid)")
        if self.searcher != "grid" and not self.distributions:
            raise ConfigError(f"{where}.distributions: searcher {self.searcher} needs at least one distribution")
        for key, dist in self.distributions.items():
            k = f"{where}.distributions.{key}"
            _check_trial_key(k, key)
            if key in self.grid:
                raise ConfigError(f"{k}: is also a grid axis (use one or the other)")
            if not isinstance(dist, Mapping) or len(dist) != 1:
                raise ConfigError(f"{k}: expected one of {{{', '.join(DISTRIBUTIONS)}: [...]}}, got {dist!r}")
            (kind, args), = dist.items()
            if kind not in DISTRIBUTIONS:
                raise ConfigError(f"{k}: unknown distribution {kind!r} (choose from {', '.join(DISTRIBUTIONS)})")
            if not isinstance(args, list) or not args:
                raise ConfigError(f"{k}.{kind}: expected a non-empty list")
            if kind == "choice":
                for i, v in enumerate(args):
                    _check_trial_value(f"{k}.choice[{i}]", key, v)
            else:
                if len(args) != 2:
                    raise ConfigError(f"{k}.{kind}: expected [low, high], got {args!r}")
                lo, hi = (_num(f"{k}.{kind}", a) for a in args)
                if not lo < hi:
                    raise ConfigError(f"{k}.{kind}: low must be < high, got {args!r}")
                if kind == "loguniform" and lo <= 0:
                    raise ConfigError(f"{k}.loguniform: bounds must be > 0, got {args!r}")
                _check_trial_value(f"{k}.{kind}", key, lo)
        return self

    def axes(self) -> dict[str, list]:
        """Grid axes with YAML strings like '1e-4' coerced to the TrialConfig type."""
        return {k: [_check_trial_value(k, k, v) for v in vals] for k, vals in self.grid.items()}


@dataclass(frozen=True)
class PretrainSpec:
    """CLM pretraining: steps, the lr × context grid to try, and how the best per group is chosen."""

    steps: int = PAPER_PRETRAIN_STEPS
    lrs: tuple[float, ...] = PAPER_PRETRAIN_LRS
    context_lens: tuple[int, ...] = PAPER_PRETRAIN_CONTEXT_LENS
    batch_size: int = PAPER_PRETRAIN_BATCH_SIZE
    eval_every: int = 500
    seed: int = 0
    selection_metric: str = "val_loss"  # val_loss | val_ppl (both: lower is better)
    # false: the best (lr, context) per group feeds the fine-tunes; true: each context length is a group of
    # its own (best lr per length) and every pretrained fine-tuning cell runs once per length (Table 5)
    per_context: bool = False
    domain_tasks: tuple[str, ...] = ()  # domain_spt corpus; () → the sweep's tasks
    # scaling studies (sweeps/scaling_*.yaml): a model-size axis (each budget its own group; the model's
    # n_layers 0 lets the solver choose the depth too), tokens per optimizer step held fixed (batch =
    # tokens_per_batch / context length; an epoch is then one freshly drawn global batch), micro-batches of
    # at most micro_tokens tokens per worker (gradient accumulation), eval_tokens of validation / test
    # windows per length, and architectures whose cost is quadratic in length skipped beyond quadratic_max_len
    param_budgets: tuple[int, ...] = ()  # () → the model's param_budget
    tokens_per_batch: int = 0  # 0 → batch_size windows per step
    micro_tokens: int = 0  # 0 → no cap (micro_batch_size from pretrain.train, else the whole batch)
    eval_tokens: int = 0  # 0 → data.eval_windows windows
    quadratic_max_len: int = 0  # 0 → never skip
    # fine-tuning cells of a per_context sweep use max_len = their pretraining context length (great apes
    # by length); scratch cells then run once per length too
    match_context: bool = False
    data: dict[str, Any] = field(default_factory=dict)  # DataConfig overrides for pretraining only
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig overrides for pretraining only

    def validate(self, where: str = "pretrain") -> "PretrainSpec":
        if self.steps < 1:
            raise ConfigError(f"{where}.steps: must be ≥ 1, got {self.steps}")
        if not self.lrs:
            raise ConfigError(f"{where}.lrs: empty list")
        for i, lr in enumerate(self.lrs):
            if not lr > 0:
                raise ConfigError(f"{where}.lrs[{i}]: must be > 0, got {lr}")
        if not self.context_lens:
            raise ConfigError(f"{where}.context_lens: empty list")
        for i, c in enumerate(self.context_lens):
            if c < 1:
                raise ConfigError(f"{where}.context_lens[{i}]: must be ≥ 1, got {c}")
        for k in ("batch_size", "eval_every"):
            if getattr(self, k) < 1:
                raise ConfigError(f"{where}.{k}: must be ≥ 1, got {getattr(self, k)}")
        for k in ("tokens_per_batch", "micro_tokens", "eval_tokens", "quadratic_max_len"):
            if getattr(self, k) < 0:
                raise ConfigError(f"{where}.{k}: must be ≥ 0, got {getattr(self, k)}")
        for i, b in enumerate(self.param_budgets):
            if b < 1:
                raise ConfigError(f"{where}.param_budgets[{i}]: must be ≥ 1, got {b}")
        if len(set(self.param_budgets)) != len(self.param_budgets):
            raise ConfigError(f"{where}.param_budgets: duplicate entries {list(self.param_budgets)}")
        if self.tokens_per_batch:
            for i, c in enumerate(self.context_lens):
                if self.tokens_per_batch % c:
                    raise ConfigError(f"{where}.context_lens[{i}]: {c} does not divide tokens_per_batch "
                                      f"{self.tokens_per_batch} (batch = tokens_per_batch / context length)")
        if self.match_context and not self.per_context:
            raise ConfigError(f"{where}.match_context: needs per_context: true (one group per context length)")
        if self.selection_metric not in SELECTION_METRICS:
            raise ConfigError(
                f"{where}.selection_metric: unknown metric {self.selection_metric!r} (choose from {', '.join(SELECTION_METRICS)})"
            )
        from_dict(DataConfig, self.data, f"{where}.data").validate(f"{where}.data")
        from_dict(TrainConfig, self.train, f"{where}.train")
        return self


@dataclass(frozen=True)
class Overrides:
    """A spec's model/data/train overrides, parsed once (by `SweepSpec.validate`) into typed configs."""

    models: dict[str, ModelConfig]  # architecture → its base ModelConfig (the spec's model overrides applied)
    data: DataConfig  # fine-tuning data (data_root resolved; task/fold set per trial)
    train: dict[str, Any]  # fine-tuning TrainConfig overrides, typed (applied over each strategy's recipe)
    pretrain_data: DataConfig  # data + pretrain.data
    pretrain_train: dict[str, Any]  # pretrain.train, typed


INTERNAL = {"internal": True}  # a field filled by load_spec / validate, never a YAML key


def _typed_train(d: Mapping[str, Any], where: str) -> dict[str, Any]:
    t = from_dict(TrainConfig, d, where)
    return {k: getattr(t, k) for k in d}


@dataclass(frozen=True)
class SweepSpec:
    """A whole study: tasks × architectures × strategies × search space, plus resources and storage."""

    name: str = ""
    description: str = ""
    tasks: tuple[str, ...] = ()
    finetune: bool = True  # false: a pretraining-only study (the scaling sweeps; tasks may be empty)
    architectures: tuple[str, ...] = ()
    strategies: tuple[str, ...] = ()
    search_space: str = ""  # file in search_spaces/ (name or path)
    data_root: str = ""  # "" → GDNA_DATA_ROOT / ../shared/data
    require_data: bool = True  # false: tasks/FASTA are checked only when the sweep runs (specs for data not here)
    model: dict[str, Any] = field(default_factory=dict)  # ModelConfig overrides
    data: dict[str, Any] = field(default_factory=dict)  # DataConfig overrides
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig overrides (fine-tuning)
    pretrain: PretrainSpec = field(default_factory=PretrainSpec)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    scheduler: str = "none"  # none | asha (early stopping on val_acc, fine-tuning only)
    asha_grace_period: int = 1  # epochs before ASHA may stop a trial
    storage: str = "runs"  # storage_path: local dir, NFS mount or s3://...
    tracking_uri: str = ""  # "" → sqlite:///<storage>/sweeps/<name>/mlflow.db
    ray_address: str = ""  # "" → RAY_ADDRESS or a fresh local Ray; "auto" on a cluster head
    # 0: one plain line per finished trial; 1: on a terminal, a live view per stage besides; 2: Ray's own
    # output (warnings, Tune's tables) shown too, not only in <sweep>/ray.log; 3: Tune's per-result details
    verbose: int = 1

    # filled by load_spec / validate (not YAML keys)
    space: SearchSpace = field(default_factory=SearchSpace, metadata=INTERNAL)
    spec_path: str = field(default="", metadata=INTERNAL)
    parsed: Overrides | None = field(default=None, compare=False, repr=False, metadata=INTERNAL)

    # -----------------------------------------------------------------------------------------
    def validate(self, check_data: bool | None = None) -> "SweepSpec":
        if not self.name or not _NAME_RE.match(self.name):
            raise ConfigError(f"name: must be a non-empty name of letters, digits, '_', '-', '.', got {self.name!r}")
        for key, values, registry in (("architectures", self.architectures, ARCHITECTURES),
                                      ("strategies", self.strategies, STRATEGIES)):
            if not values:
                raise ConfigError(f"{key}: empty list (choose from {', '.join(registry.names())})")
            for i, v in enumerate(values):
                registry.get(v, f"{key}[{i}]")
            if len(set(values)) != len(values):
                raise ConfigError(f"{key}: duplicate entries {list(values)}")
        if not self.tasks and self.finetune:
            raise ConfigError("tasks: empty list (name at least one Genomic Benchmarks task)")
        if self.pretrain.param_budgets and self.finetune:
            raise ConfigError("pretrain.param_budgets: a model-size sweep is pretraining only (set finetune: false)")
        if not self.finetune and all(corpus_of(st) is None for st in self.strategies):
            raise ConfigError("finetune: false needs a strategy with a pretraining corpus (e.g. hg38)")
        if len(set(self.tasks)) != len(self.tasks):
            raise ConfigError(f"tasks: duplicate entries {list(self.tasks)}")
        for i, t in enumerate(self.tasks):
            if not t or "/" in t:
                raise ConfigError(f"tasks[{i}]: invalid task name {t!r}")
        if "arch" in self.model:
            raise ConfigError("model.arch: set by `architectures:`, not by model overrides")
        models = {arch: ModelConfig.for_arch(arch, self.model).validate("model") for arch in self.architectures}
        from gdna.models.build import resolve_dims

        for m in models.values():  # a budget no width reaches (±3%) fails here, not in the first trial
            resolve_dims(m)
        data = from_dict(DataConfig, self.data, "data")
        for k in ("task", "corpus", "domain_tasks"):
            if k in self.data:
                raise ConfigError(f"data.{k}: set by the sweep (tasks/strategies), not by data overrides")
        data.validate("data")
        train = _typed_train(self.train, "train")
        if "objective" in self.train:
            raise ConfigError("train.objective: set by the stage (cls for fine-tuning, clm for pretraining)")
        TrainConfig(**{**train, "objective": "cls"}).validate("train")
        self.pretrain.validate()
        for i, t in enumerate(self.pretrain.domain_tasks):
            if not t or "/" in t:
                raise ConfigError(f"pretrain.domain_tasks[{i}]: invalid task name {t!r}")
        self.resources.validate()
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"scheduler: unknown scheduler {self.scheduler!r} (choose from {', '.join(SCHEDULERS)})")
        if self.asha_grace_period < 1:
            raise ConfigError(f"asha_grace_period: must be ≥ 1, got {self.asha_grace_period}")
        if not self.storage:
            raise ConfigError("storage: empty path")
        scheme = self.tracking_uri.split("://", 1)[0] if "://" in self.tracking_uri else ""
        if self.tracking_uri and scheme not in TRACKING_SCHEMES:
            raise ConfigError(f"tracking_uri: unsupported {'scheme ' + repr(scheme) + ' in' if scheme else 'plain path'} "
                              f"{self.tracking_uri!r} (use sqlite:///path/mlflow.db, http(s)://host:port or "
                              f"{', '.join(s for s in TRACKING_SCHEMES if s not in ('sqlite', 'http', 'https'))})")
        self.space.validate(f"search_space({self.search_space})")
        if self.verbose not in (0, 1, 2, 3):
            raise ConfigError(f"verbose: must be 0..3, got {self.verbose}")
        # fold values must fit n_folds
        n_folds = data.n_folds
        if isinstance(self.space.folds, tuple):
            for f in self.space.folds:
                if not 0 <= f < n_folds:
                    raise ConfigError(f"search_space({self.search_space}).folds: fold {f} outside 0..{n_folds - 1}")
        if check_data if check_data is not None else self.require_data:
            self.check_data()
        pre_data = from_dict(DataConfig, {**self.data, **self.pretrain.data}, "pretrain.data")
        root = str(self.root())
        parsed = Overrides(models=models, data=dataclasses.replace(data, data_root=root), train=train,
                           pretrain_data=dataclasses.replace(pre_data, data_root=root),
                           pretrain_train=_typed_train(self.pretrain.train, "pretrain.train"))
        return dataclasses.replace(self, parsed=parsed)

    def check_storage(self) -> None:
        """The storage path can be created and written (checked before Ray starts; URIs are left to Ray)."""
        if "://" in self.storage:
            return
        d = self.storage_dir()
        probe = d / f".gdna-write-check-{os.getpid()}"
        try:
            d.mkdir(parents=True, exist_ok=True)
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            if no_space(e):
                probe.unlink(missing_ok=True)
                raise StorageFullError(storage_full_message(d, self.name)) from None
            raise ConfigError(f"storage: {d} is not writable ({e.strerror or e})") from None
        if free_bytes(d) < min_free_bytes():
            raise StorageFullError(storage_full_message(d, self.name))

    def check_data(self) -> None:
        """Every task's data (its task kind says what) and the files each strategy's corpus needs."""
        from gdna.data.tasks import task_problem

        root = self.root()
        if not root.is_dir():
            raise ConfigError(f"data_root: {root} does not exist (set data_root, --data-root or GDNA_DATA_ROOT)")
        for i, t in enumerate(self.tasks + tuple(self.pretrain.domain_tasks)):
            problem = task_problem(root, t)
            if problem:
                key = f"tasks[{i}]" if i < len(self.tasks) else f"pretrain.domain_tasks[{i - len(self.tasks)}]"
                raise ConfigError(f"{key}: {problem}")
        data = from_dict(DataConfig, {**self.data, **self.pretrain.data}, "data")
        for strategy in self.strategies:
            corpus = corpus_of(strategy)
            for k in corpus.needs if corpus else ():
                p = Path(getattr(data, k))
                p = p if p.is_absolute() else root / p
                if not p.is_file():
                    raise ConfigError(f"data.{k}: {p} not found (needed by the {strategy} strategy)")

    # -----------------------------------------------------------------------------------------
    def root(self) -> Path:
        if self.data_root:
            return Path(self.data_root).expanduser().resolve()
        return Path(default_data_root())

    def storage_dir(self) -> Path:
        return Path(self.storage).expanduser().resolve()

    def sweep_dir(self) -> Path:
        return self.storage_dir() / "sweeps" / self.name

    def pretrain_dir(self) -> Path:
        return self.storage_dir() / "pretrain"

    def tracking(self) -> str:
        from gdna.tracking import sweep_store_uri

        return self.tracking_uri or sweep_store_uri(self.sweep_dir())

    @property
    def overrides(self) -> Overrides:
        if self.parsed is None:
            raise RuntimeError("SweepSpec.overrides: validate() the spec first")
        return self.parsed

    def base_data(self, task: str | None = None, **extra: Any) -> DataConfig:
        return dataclasses.replace(self.overrides.data, task=task, **extra)

    def to_yaml_dict(self) -> dict[str, Any]:
        """The resolved spec (search space inlined) as written to <sweep_dir>/spec.yaml."""
        d = to_dict(dataclasses.replace(self, parsed=None))
        d.pop("spec_path")
        d.pop("parsed")
        d["storage"] = str(self.storage_dir())
        d["data_root"] = str(self.root())
        d["search_space"] = d.pop("space")
        d["search_space"]["name"] = self.space.name or self.search_space
        return d


# ---------------------------------------------------------------------------------------------
def load_yaml(path: Path, what: str) -> Any:
    try:
        with open(path) as f:
            return yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"{what}: file {path} not found") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{what}: {path}{where}: invalid YAML ({problem})") from None


def find_search_space(ref: str, spec_path: Path | None) -> Path:
    """A search space by name (search_spaces/<name>.yaml) or by path (relative to the spec or the cwd)."""
    if not ref:
        raise ConfigError("search_space: missing (name a file in search_spaces/)")
    cands = []
    p = Path(ref).expanduser()
    names = [p] if p.suffix in (".yaml", ".yml") else [p.with_name(p.name + ".yaml"), p]
    for n in names:
        if n.is_absolute():
            cands.append(n)
            continue
        if spec_path is not None:
            cands += [spec_path.parent / n, spec_path.parent.parent / "search_spaces" / n]
        cands += [Path.cwd() / "search_spaces" / n, REPO_ROOT / "search_spaces" / n, Path.cwd() / n]
    for c in cands:
        if c.is_file():
            return c.resolve()
    raise ConfigError(f"search_space: {ref!r} not found (looked for search_spaces/{names[0].name})")


def load_search_space(ref: str, spec_path: Path | None = None) -> SearchSpace:
    if isinstance(ref, Mapping):  # inlined (the resolved spec.yaml of a running sweep)
        return from_dict(SearchSpace, ref, "search_space").validate()
    path = find_search_space(ref, spec_path)
    raw = load_yaml(path, "search_space")
    where = f"search_space({path.stem})"
    space = from_dict(SearchSpace, raw, where)
    if not space.name:
        space = dataclasses.replace(space, name=path.stem)
    return space.validate(where)


def spec_from_dict(raw: Any, spec_path: Path | None = None, check_data: bool | None = None, **overrides: Any) -> SweepSpec:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"spec: expected a mapping of keys, got {type(raw).__name__}")
    raw = dict(raw)
    for f in dataclasses.fields(SweepSpec):  # filled by validation, never YAML keys (checked before the search space)
        if f.metadata.get("internal") and f.name in raw:
            raise ConfigError(f"{f.name}: unknown key")
    ss = raw.get("search_space", "")
    space = load_search_space(ss, spec_path)
    if isinstance(ss, Mapping):
        raw["search_space"] = space.name
    raw.update({k: v for k, v in overrides.items() if v is not None})
    spec = from_dict(SweepSpec, raw)
    spec = dataclasses.replace(spec, space=space, spec_path=str(spec_path or "")).validate(check_data)
    # locations are fixed here, in the driver's working directory: Tune runs each trial in another one;
    # credentials in the tracking URI go to MLflow's env vars, never into spec.yaml, MLflow or a log line
    from gdna.cluster.uri import absolute_store, apply_credentials

    return dataclasses.replace(spec, storage=_absolute(spec.storage), data_root=str(spec.root()),
                               tracking_uri=absolute_store(apply_credentials(spec.tracking_uri)))


def _absolute(path: str) -> str:
    """A local path made absolute (URIs such as s3://... and "" unchanged)."""
    return path if not path or "://" in path else str(Path(path).expanduser().resolve())


def load_spec(path: str | os.PathLike, check_data: bool | None = None, **overrides: Any) -> SweepSpec:
    """Read and validate `sweeps/<name>.yaml` (overrides, e.g. storage=..., win over the file)."""
    p = Path(path)
    if not p.is_file() and not p.suffix:
        for c in (Path("sweeps") / f"{p}.yaml", REPO_ROOT / "sweeps" / f"{p}.yaml"):
            if c.is_file():
                p = c
                break
    raw = load_yaml(p, "spec")
    return spec_from_dict(raw, p.resolve(), check_data, **overrides)


# ---------------------------------------------------------------------------------------------
_TRIAL_SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}
_FORBIDDEN_AXES = {"model.arch", "data.task", "data.corpus", "data.domain_tasks", "train.objective", "train.seed", "data.fold", "data.data_root"}


def _check_trial_key(where: str, key: str) -> None:
    parts = key.split(".")
    if len(parts) != 2 or parts[0] not in _TRIAL_SECTIONS:
        raise ConfigError(f"{where}: unknown key (use model.X, data.X or train.X, e.g. train.lr)")
    names = model_keys() if parts[0] == "model" else {f.name for f in dataclasses.fields(_TRIAL_SECTIONS[parts[0]])}
    if parts[1] not in names:
        raise ConfigError(f"{where}: unknown key (valid {parts[0]} keys: {', '.join(sorted(names))})")
    if key in _FORBIDDEN_AXES:
        raise ConfigError(f"{where}: set by the sweep (architectures/tasks/strategies/seeds/folds), not a search axis")


def _check_trial_value(where: str, key: str, value: Any) -> Any:
    section, name = key.split(".")
    cls = _TRIAL_SECTIONS[section]
    if section == "model":  # a common key, or the key of the first architecture that has it
        common = {f.name for f in dataclasses.fields(ModelConfig)}
        cls = ModelConfig if name in common else next(
            a.settings for a in ARCHITECTURES if name in {f.name for f in dataclasses.fields(a.settings)})
        obj = from_dict(cls, {"arch": next(iter(ARCHITECTURES)).name, name: value} if cls is ModelConfig
                        else {name: value}, section)
    else:
        obj = from_dict(cls, {name: value}, section)
    v = getattr(obj, name)
    if name in ("lr", "batch_size", "d_model", "context_len", "epochs", "max_steps") and v is not None and not v > 0:
        raise ConfigError(f"{where}: must be > 0, got {value!r}")
    return to_dict(v)


def _num(where: str, v: Any) -> float:
    try:
        if isinstance(v, bool):
            raise ValueError
        return float(v)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected a number, got {v!r}") from None


# storage space -------------------------------------------------------------------------------
MIN_FREE_ENV = "GDNA_STORAGE_MIN_FREE_MB"
DEFAULT_MIN_FREE_MB = 64  # a few checkpoints of the paper's models, the MLflow store and the Tune state


class StorageFullError(GdnaError):
    """The sweep's storage has (almost) no space left: one line naming it; `gdna resume` continues."""


def min_free_bytes() -> int:
    """Free space a sweep needs on its storage to start, and below which a running sweep stops."""
    try:
        mb = float(os.environ.get(MIN_FREE_ENV) or DEFAULT_MIN_FREE_MB)
    except ValueError:
        raise ConfigError(f"{MIN_FREE_ENV}: not a number: {os.environ[MIN_FREE_ENV]!r}") from None
    return int(mb * 2**20)


def free_bytes(d: Path) -> int:
    try:
        return shutil.disk_usage(d).free
    except OSError:
        return 2**62  # (unknown: not the guard's business)


def no_space(e: BaseException | None) -> bool:
    """`e` (or an exception it wraps) is a write that failed for lack of space (ENOSPC, a quota, sqlite's
    'database or disk is full', pyarrow's 'errno 28')."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(e)
        if "No space left on device" in text or "database or disk is full" in text or "Disk quota exceeded" in text:
            return True
        e = e.__cause__ or e.__context__
    return False


def stop_free_bytes() -> int:
    """Free space below which a running sweep stops (it started with `min_free_bytes()`)."""
    return min_free_bytes() // 4


def storage_full_message(d: Path, name: str, free: int | None = None) -> str:
    free = free_bytes(d) if free is None else free
    return (f"storage: {d}: no space left on device ({free / 2**20:.1f} MB free, a sweep needs "
            f"{min_free_bytes() / 2**20:.0f} MB; {MIN_FREE_ENV} sets it): free some space, then "
            f"`gdna resume {name} --storage {d}`")
