"""The extension points: architectures, task kinds, pretraining corpora and strategies, by name.

A new architecture, task kind, corpus or strategy is ONE file that calls `register(...)` on import, plus
its module path in the registry's `builtins` below (or an entry point of the group named below, for a
package outside this repository). Spec validation, the plan, the loop and the analysis ask these
registries; no code outside a registry entry names a specific architecture, task or strategy.

    ARCHITECTURES  Architecture   gdna.models.<arch>       builder, typed settings, width-solver needs
    TASK_KINDS     TaskKind       gdna.data.<kind>         which task names it serves, classes, datasets,
                                                           task corpus, availability check, data files
    CORPORA        Corpus         gdna.data.<corpus>       causal-LM datasets, data files, grouping
    STRATEGIES     Strategy       gdna.strategies          the corpus it pretrains on, its fine-tuning recipe

This module imports no torch and no other gdna module but `errors`, so configs can validate against it
without building anything; entries are imported on first lookup.
"""
from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Generic, Iterator, TypeVar

from gdna.errors import ConfigError

E = TypeVar("E")


class Registry(Generic[E]):
    """Named entries of one kind, filled by importing the builtin modules and the entry points once."""

    def __init__(self, kind: str, builtins: tuple[str, ...], entry_point_group: str):
        self.kind, self.builtins, self.group = kind, builtins, entry_point_group
        self._entries: dict[str, E] = {}
        self._loaded = False
        self._lock = threading.RLock()

    def register(self, entry: E) -> E:
        name = getattr(entry, "name")
        with self._lock:
            old = self._entries.get(name)
            if old is not None and old is not entry and _origin(old) != _origin(entry):
                raise ValueError(f"{self.kind} {name!r} is registered twice ({_origin(old)} and {_origin(entry)})")
            self._entries[name] = entry
        return entry

    def _load(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            self._loaded = True  # set first: the modules imported below call register()
            for mod in self.builtins:
                importlib.import_module(mod)
            for ep in metadata.entry_points(group=self.group):
                ep.load()

    def names(self) -> tuple[str, ...]:
        self._load()
        return tuple(self._entries)

    def __iter__(self) -> Iterator[E]:
        self._load()
        return iter(list(self._entries.values()))

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def get(self, name: str, key: str = "") -> E:
        """The entry called `name`; else ConfigError "<key>: unknown <kind> 'x' (choose from ...)"."""
        self._load()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            where = f"{key}: " if key else ""
            raise ConfigError(f"{where}unknown {self.kind} {name!r} (choose from {', '.join(self._entries)})") from None


def below_one(settings: Any, *keys: str) -> str | None:
    """An `Architecture.check` helper: the message for the first of `keys` whose setting is < 1, else None."""
    for k in keys:
        if getattr(settings, k) < 1:
            return f"model.{k}: must be ≥ 1, got {getattr(settings, k)}"
    return None


def _origin(entry: Any) -> str:
    fn = getattr(entry, "build", None) or getattr(entry, "datasets", None)
    return getattr(fn, "__module__", "") or type(entry).__module__


# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Architecture:
    """A backbone family. Its settings are a frozen dataclass of its own model keys (flat in YAML and
    MLflow params: `model.d_state`); `build` returns a backbone module whose forward is
    (ids (B, L), mask (B, L) | None) → (B, L, D), with an `embed` (nn.Embedding) the LM head ties to."""

    name: str
    settings: type  # frozen dataclass; its defaults are the architecture's defaults
    build: Callable[..., Any]  # (vocab_size, d_model, n_layers, d_inner, settings, dropout) → backbone
    default_inner: Callable[[Any, int], int]  # (settings, d_model) → the inner width the solver starts from
    width_step: Callable[[Any], int] = lambda settings: 8  # d_model is a multiple of this
    check: Callable[[Any, int], str | None] = lambda settings, d_model: None  # explicit d_model → error or None
    describe: Callable[[Any, Any], str] = lambda settings, dims: f"hidden={dims.d_inner}"  # (settings, Dims)
    quadratic_in_length: bool = False  # cost grows as L² (long-context sweeps may skip it)


@dataclass(frozen=True)
class TaskKind:
    """A kind of classification task: which task names it serves and how to read them.

    `serves(name)` says whether a task name is of this kind; kinds are asked in registration order and
    a kind with `fallback=True` (the Genomic Benchmarks folder layout) serves every name no other kind
    claims. Functions take the data root (Path) and the task name, or the trial's DataConfig."""

    name: str
    serves: Callable[[str], bool]
    classes: Callable[[Path, str], list[str]]  # sorted class names (label i = classes[i])
    check: Callable[[Path, str], str | None]  # None when the task's data is there, else one line on why not
    files: Callable[[Path, str], list[Path]]  # every file the task's examples come from (data fingerprint)
    datasets: Callable[..., tuple]  # (DataConfig, seed) → (train_ds, val_ds, test_ds, n_classes)
    corpus: Callable[..., tuple]  # (DataConfig, task, seed) → (train sequences, val sequences) for causal-LM corpora
    discover: Callable[[Path], list[str]] = lambda root: []  # the tasks of this kind under a data root
    summary: Callable[[Path, str], list[str]] = lambda root, task: []  # lines for `gdna data summary`
    fallback: bool = False
    describe: str = ""


@dataclass(frozen=True)
class Corpus:
    """A causal-LM pretraining corpus. `reads` says which tasks' data it needs: "none" (e.g. a genome),
    "task" (one pretraining group per fine-tuning task) or "all_tasks" (one group over the sweep's tasks)."""

    name: str
    reads: str  # none | task | all_tasks
    datasets: Callable[..., tuple]  # (DataConfig, seed) → (train_ds, val_ds), items ids (L+1,)
    files: Callable[..., list[Path]]  # (DataConfig) → every file the corpus reads (data fingerprint)
    describe: str = ""  # e.g. "each task's train split", for the plan
    needs: tuple[str, ...] = ()  # DataConfig path fields that must exist (checked before Ray starts)
    test: Callable[..., Any] | None = None  # (DataConfig, seed) → test windows or None (test perplexity)


@dataclass(frozen=True)
class Strategy:
    """A pretraining strategy: the corpus it pretrains on (None: from scratch) and its fine-tuning recipe
    (TrainConfig overrides; the paper's numbers come from gdna.config)."""

    name: str
    corpus: str | None
    recipe: dict[str, Any] = field(default_factory=dict)
    describe: str = ""


ARCHITECTURES: Registry[Architecture] = Registry(
    "architecture", ("gdna.models.transformer", "gdna.models.hyena", "gdna.models.mamba", "gdna.models.cnn"),
    "gdna.architectures")
TASK_KINDS: Registry[TaskKind] = Registry(
    "task kind", ("gdna.data.greatapes", "gdna.data.genomic_benchmarks"), "gdna.task_kinds")
CORPORA: Registry[Corpus] = Registry("corpus", ("gdna.data.corpora",), "gdna.corpora")
STRATEGIES: Registry[Strategy] = Registry("strategy", ("gdna.strategies",), "gdna.strategies")


def task_kind(task: str) -> TaskKind:
    """The kind that serves task name `task` (the first that claims it, else the fallback kind)."""
    kinds = list(TASK_KINDS)
    for k in kinds:
        if not k.fallback and k.serves(task):
            return k
    for k in kinds:
        if k.fallback and k.serves(task):
            return k
    raise ConfigError(f"tasks: no task kind serves {task!r}")


def corpus_of(strategy: str, key: str = "strategies") -> Corpus | None:
    """The corpus a strategy pretrains on, or None (from scratch)."""
    s = STRATEGIES.get(strategy, key)
    return None if s.corpus is None else CORPORA.get(s.corpus, f"strategy {strategy}: corpus")
