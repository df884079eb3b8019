"""The extension points hold: no module outside a registry entry names an architecture, task or strategy;
no import cycle inside gdna/; a new entry appears everywhere through the registries."""
from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from gdna.config import ModelConfig, finetune_recipe
from gdna.errors import ConfigError
from gdna.registry import ARCHITECTURES, CORPORA, STRATEGIES, TASK_KINDS, Architecture, Registry, corpus_of, task_kind

PKG = Path(__file__).resolve().parents[1] / "gdna"
# The registry entries: the files allowed to name what they register.
ENTRIES = {"models/transformer.py", "models/hyena.py", "models/mamba.py", "models/cnn.py", "data/greatapes.py",
           "data/genomic_benchmarks.py", "data/corpora.py", "strategies.py"}
# `gdna data download hg38` names the hg38 genome (a data set to download), not the strategy.
DATA_SOURCES = {"data/cli.py": {"hg38"}, "data/download.py": {"hg38"}}


def _string_constants(path: Path) -> set[str]:
    """String literals in code (docstrings left out: prose may name anything)."""
    tree = ast.parse(path.read_text())
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return {n.value for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings}


def test_no_module_outside_the_registries_names_an_architecture_task_or_strategy():
    names = set(ARCHITECTURES.names()) | set(STRATEGIES.names()) | {k.name for k in TASK_KINDS if not k.fallback}
    offenders = []
    for path in sorted(PKG.rglob("*.py")):
        rel = str(path.relative_to(PKG))
        if rel in ENTRIES:
            continue
        hits = (_string_constants(path) & names) - DATA_SOURCES.get(rel, set())
        offenders += [f"{rel}: {sorted(hits)}"] if hits else []
    assert not offenders, "names outside a registry entry: " + "; ".join(offenders)


def _imports(path: Path) -> set[str]:
    """gdna modules imported anywhere in the file (module level AND inside functions)."""
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("gdna")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gdna") and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def test_no_import_cycle_inside_gdna():
    modules = {}
    for path in PKG.rglob("*.py"):
        parts = path.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph = {m: {i for i in _imports(p) if i in modules and i != m and not m.startswith(i + ".")}
             for m, p in modules.items()}
    # a package's __init__ importing its own submodules is not a cycle of the code; everything else is
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle = stack[stack.index(n):] + [n]
                pytest.fail("import cycle: " + " → ".join(cycle))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_private_names_stay_in_their_module():
    offenders = []
    for path in sorted(PKG.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gdna"):
                offenders += [f"{path.relative_to(PKG)}: {node.module}.{a.name}" for a in node.names
                              if a.name.startswith("_")]
    assert not offenders, offenders


def test_registries_know_the_study_and_reject_unknown_names():
    assert set(ARCHITECTURES.names()) >= {"transformer", "hyena", "mamba", "cnn"}
    assert set(STRATEGIES.names()) == {"scratch", "hg38", "task_spt", "domain_spt"}
    assert corpus_of("scratch") is None and corpus_of("task_spt").reads == "task"
    assert task_kind("greatapes").name == "greatapes" and task_kind("human_ocr_ensembl").fallback
    with pytest.raises(ConfigError, match="^strategies: unknown strategy 'pre'"):
        STRATEGIES.get("pre", "strategies")
    for s in STRATEGIES:  # a strategy's corpus is registered
        assert s.corpus is None or s.corpus in CORPORA
    assert finetune_recipe("scratch").patience is not None and finetune_recipe("hg38").patience is None


def test_a_new_architecture_is_one_registration(monkeypatch):
    """Register a toy architecture in a fresh registry: config validation, the width solver and the model
    factory take it without any other change."""
    from gdna.models import build as B
    from gdna.models.layers import MLP, Backbone, RMSNorm

    @dataclasses.dataclass(frozen=True)
    class ToySettings:
        toy_mlp_only: bool = True

    class Block(__import__("torch").nn.Module):
        def __init__(self, d, inner):
            super().__init__()
            self.norm, self.mlp = RMSNorm(d), MLP(d, inner, "gelu")

        def forward(self, x):
            return x + self.mlp(self.norm(x))

    reg = Registry("architecture", (), "gdna.none")
    for a in ARCHITECTURES:
        reg.register(a)
    reg.register(Architecture(
        name="toy", settings=ToySettings,
        build=lambda vocab, d, n, inner, s, dropout: Backbone(vocab, d, [Block(d, inner) for _ in range(n)], dropout, n),
        default_inner=lambda s, d: 4 * d))
    monkeypatch.setattr(B, "ARCHITECTURES", reg)
    import gdna.config as C

    monkeypatch.setattr(C, "ARCHITECTURES", reg)
    cfg = ModelConfig.for_arch("toy", {"param_budget": 200_000, "n_heads": 4}).validate()  # n_heads: not toy's
    assert cfg.settings == ToySettings() and "n_heads" not in C.to_dict(cfg)
    model = B.build_model(cfg, "lm")
    assert abs(B.count_params(model.backbone) - 200_000) <= 0.03 * 200_000
    with pytest.raises(ConfigError, match="^model.d_state: not a key of architecture toy"):
        C.from_dict(ModelConfig, {"arch": "toy", "d_state": 4})
