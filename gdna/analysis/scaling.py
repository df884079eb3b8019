"""Scaling figures (issue 17): the Mamba paper's Figure 5 (left: perplexity vs parameters; right: perplexity
vs sequence length) and Figure 6 (accuracy vs fine-tuning sequence length, chance dashed), and the seed
study's Figure 2 (test perplexity vs tokens seen, one point per pretraining context length).

Inputs: the pretraining trial runs of a sweep (`pretrain_frame` of `load.search_runs_frame` output: the
loop's final `test_ppl`, `best_val_ppl`, `n_params`, `n_layers`, `d_model`, `tokens_seen`) and the tidy
fine-tuning frame of `load.load_runs` (`params.data.max_len` is the fine-tuning sequence length). Every
point is the validation-selected configuration of its group: the pretraining lr with the lowest
validation perplexity (then its TEST perplexity is plotted; the validation one only when the corpus has no
test split, and the axis then says so), the fine-tuning (lr, batch) with the best mean validation accuracy.
Each figure is written as PNG + CSV (the plotted numbers). A figure is made only when its axis varies.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from gdna.analysis.plots import PAPER_RC, arch_style, save_figure  # noqa: E402
from gdna.analysis.tables import markdown_table, ordered, select_on_validation  # noqa: E402
from gdna.registry import ARCHITECTURES  # noqa: E402

PRETRAIN_GROUP = ["arch", "strategy", "task", "context_len", "param_budget"]


@dataclass
class Figure:
    name: str  # file stem under figures/ (PNG) and tables/ (CSV)
    title: str
    frame: pd.DataFrame  # the plotted numbers
    markdown: str


def pretrain_frame(raw: pd.DataFrame) -> pd.DataFrame:
    """Pretraining runs (mlflow search_runs columns) → one row per run with the scaling columns."""
    if raw.empty:
        return pd.DataFrame(columns=PRETRAIN_GROUP)

    def col(name: str, default=np.nan) -> pd.Series:
        return raw[name] if name in raw.columns else pd.Series([default] * len(raw), index=raw.index)

    num = lambda s: pd.to_numeric(s, errors="coerce")  # noqa: E731
    out = pd.DataFrame({
        "run_id": col("run_id"), "arch": col("tags.arch").fillna(col("params.model.arch")),
        "strategy": col("tags.strategy", ""), "task": col("tags.task", "").fillna(""),
        "status": col("tags.gdna.status", "finished").fillna("finished"),
        "lr": num(col("params.train.lr")), "context_len": num(col("params.data.context_len")),
        "param_budget": num(col("params.model.param_budget")), "batch_size": num(col("params.train.batch_size")),
        "n_params": num(col("metrics.n_params")), "n_layers": num(col("metrics.n_layers")),
        "d_model": num(col("metrics.d_model")), "tokens_seen": num(col("metrics.tokens_seen")),
        "test_ppl": num(col("metrics.test_ppl")), "val_ppl": num(col("metrics.best_val_ppl")),
    })
    out["task"] = out["task"].astype(str)
    out["ok"] = (out["status"] == "finished") & out["val_ppl"].notna() & np.isfinite(out["val_ppl"])
    return out


def select_pretraining(pre: pd.DataFrame) -> pd.DataFrame:
    """Per (arch, strategy, task, context, budget): the finished run with the lowest validation perplexity."""
    if pre.empty or "ok" not in pre:  # no pretraining runs in this sweep (a from-scratch sweep)
        return pre.iloc[0:0]
    ok = pre[pre["ok"]]
    if ok.empty:
        return ok
    best = ok.loc[ok.groupby(PRETRAIN_GROUP, dropna=False)["val_ppl"].idxmin()].copy()
    best["ppl"] = best["test_ppl"].where(best["test_ppl"].notna(), best["val_ppl"])
    best["ppl_split"] = np.where(best["test_ppl"].notna(), "test", "validation")
    return best.sort_values(PRETRAIN_GROUP).reset_index(drop=True)


def _ppl_label(sel: pd.DataFrame) -> str:
    return "Perplexity" if (sel["ppl_split"] == "test").all() else "Perplexity (validation where no test split)"


def _size_label(n: float) -> str:
    for unit, div in (("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:g}"


def _lines(sel: pd.DataFrame, by: list[str]):
    """(label, colour, marker, rows) per line, architectures in registry order."""
    archs = ordered(sel["arch"].unique(), ARCHITECTURES)
    for j, arch in enumerate(archs):
        rows = sel[sel["arch"] == arch]
        colour, marker = arch_style(arch, j)
        keys = [k for k in by if rows[k].nunique(dropna=False) > 1 or (k == "strategy" and sel[k].nunique() > 1)]
        for i, (key, part) in enumerate(rows.groupby(keys, dropna=False, sort=True) if keys else [((), rows)]):
            key = key if isinstance(key, tuple) else (key,)
            extra = " ".join(_size_label(v) if k == "param_budget" else str(v) for k, v in zip(keys, key))
            yield (f"{arch} {extra}".strip(), colour, ["-", "--", ":", "-."][i % 4], marker, part)


def figure5_left(sel: pd.DataFrame) -> Figure | None:
    """Perplexity vs parameters (log x), one line per architecture, per context length."""
    if sel.empty or sel["n_params"].nunique() < 2 or sel["param_budget"].nunique() < 2:
        return None
    frame = sel[["arch", "strategy", "task", "context_len", "param_budget", "n_params", "n_layers", "d_model", "lr",
                 "ppl", "ppl_split", "val_ppl", "tokens_seen"]]
    with plt.rc_context(PAPER_RC):
        fig, ax = plt.subplots(figsize=(4.2, 3.2))
        for label, colour, ls, marker, part in _lines(sel, ["context_len", "strategy"]):
            part = part.sort_values("n_params")
            ax.plot(part["n_params"], part["ppl"], ls, color=colour, marker=marker, label=label)
        ax.set_xscale("log")
        ax.set_xlabel("Parameters (log scale)")
        ax.set_ylabel(_ppl_label(sel))
        ctx = ", ".join(str(int(c)) for c in sorted(sel["context_len"].unique()))
        ax.set_title(f"Scaling Laws on the Human Genome (context {ctx})")
        ax.legend(frameon=False)
        fig.tight_layout()
    rows = [[r.arch, f"{int(r.context_len)}", _size_label(r.param_budget), f"{int(r.n_params):,}",
             f"{int(r.n_layers)} × {int(r.d_model)}", f"{r.lr:g}", f"{r.ppl:.4f}"] for r in frame.itertuples()]
    md = markdown_table(["arch", "context", "budget", "parameters", "layers × width", "lr", "perplexity"], rows, 2)
    return Figure("fig5_left_ppl_vs_params", "Figure 5 (left): perplexity vs parameters", frame, md), fig


def figure5_right(sel: pd.DataFrame) -> Figure | None:
    """Perplexity vs sequence length (log x), one line per architecture (and model size)."""
    if sel.empty or sel["context_len"].nunique() < 2:
        return None
    frame = sel[["arch", "strategy", "task", "param_budget", "n_params", "context_len", "batch_size", "lr", "ppl",
                 "ppl_split", "val_ppl", "tokens_seen"]]
    with plt.rc_context(PAPER_RC):
        fig, ax = plt.subplots(figsize=(4.2, 3.2))
        for label, colour, ls, marker, part in _lines(sel, ["param_budget", "strategy"]):
            part = part.sort_values("context_len")
            size = _size_label(part["n_params"].median()) if part["n_params"].notna().any() else ""
            ax.plot(part["context_len"], part["ppl"], ls, color=colour, marker=marker,
                    label=label if sel["param_budget"].nunique() > 1 else f"{label} {size}".strip())
        ax.set_xscale("log", base=2)
        ax.set_xlabel("Sequence Length (log scale)")
        ax.set_ylabel(_ppl_label(sel))
        ax.set_title("Scaling Laws - Sequence Length")
        ax.legend(frameon=False)
        fig.tight_layout()
    rows = [[r.arch, _size_label(r.n_params) if np.isfinite(r.n_params) else "–", f"{int(r.context_len)}",
             f"{int(r.batch_size)}", f"{r.lr:g}", f"{r.ppl:.4f}"] for r in frame.itertuples()]
    md = markdown_table(["arch", "parameters", "context", "batch (windows)", "lr", "perplexity"], rows, 2)
    return Figure("fig5_right_ppl_vs_length", "Figure 5 (right): perplexity vs sequence length", frame, md), fig


def figure2_tokens(sel: pd.DataFrame) -> Figure | None:
    """The seed study's Figure 2: test perplexity vs tokens seen in pretraining, a point per context length."""
    if sel.empty or sel["context_len"].nunique() < 2 or sel["tokens_seen"].isna().all():
        return None
    frame = sel[["arch", "strategy", "task", "param_budget", "context_len", "tokens_seen", "ppl", "ppl_split"]]
    with plt.rc_context(PAPER_RC):
        fig, ax = plt.subplots(figsize=(4.2, 3.2))
        for label, colour, ls, marker, part in _lines(sel, ["param_budget", "strategy"]):
            part = part.sort_values(["tokens_seen", "context_len"])
            ax.plot(part["tokens_seen"], part["ppl"], ls, color=colour, marker=marker, label=label)
            for r in part.itertuples():
                ax.annotate(f"{int(r.context_len)}", (r.tokens_seen, r.ppl), textcoords="offset points",
                            xytext=(3, 3), fontsize=6, color=colour)
        ax.set_xscale("log")
        ax.set_xlabel("Number of seen tokens (log scale; labels: context length)")
        ax.set_ylabel("Test perplexity" if (sel["ppl_split"] == "test").all() else _ppl_label(sel))
        ax.set_title("Test perplexity after pretraining")
        ax.legend(frameon=False)
        fig.tight_layout()
    rows = [[r.arch, f"{int(r.context_len)}", f"{int(r.tokens_seen):,}", f"{r.ppl:.4f}"] for r in frame.itertuples()]
    md = markdown_table(["arch", "context", "tokens seen", "test perplexity"], rows, 2)
    return Figure("fig2_ppl_vs_tokens", "Seed study Figure 2: test perplexity vs tokens seen", frame, md), fig


def finetune_lengths(df: pd.DataFrame) -> pd.DataFrame:
    """Fine-tuning runs with their sequence length `seq_len` (data.max_len, else the pretraining context)."""
    if df.empty:
        return df.assign(seq_len=pd.Series(dtype=float))
    max_len = pd.to_numeric(df["params.data.max_len"], errors="coerce") if "params.data.max_len" in df else np.nan
    return df.assign(seq_len=pd.Series(max_len, index=df.index).fillna(pd.to_numeric(df["context_len"], errors="coerce")))


def figure6_length(df: pd.DataFrame) -> Figure | None:
    """Accuracy vs fine-tuning sequence length per task with several lengths (log x), one line per
    architecture × strategy, chance (1/n_classes) dashed."""
    df = finetune_lengths(df)
    tasks = [t for t, runs in df.groupby("task") if runs["seq_len"].nunique() > 1] if not df.empty else []
    if not tasks:
        return None
    df = df[df["task"].isin(tasks)]
    config = [k for k in ("lr", "batch_size") if df[k].nunique() > 1]
    sel = select_on_validation(df, ["task", "arch", "strategy", "seq_len"], config)
    sel = sel.dropna(subset=["test_mean"])
    chance = df.groupby("task")["n_classes"].max()
    with plt.rc_context(PAPER_RC):
        fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.2), squeeze=False)
        for ax, task in zip(axes[0], tasks):
            part = sel[sel["task"] == task]
            for label, colour, ls, marker, rows in _lines(part.assign(param_budget=np.nan), ["strategy"]):
                rows = rows.sort_values("seq_len")
                ax.plot(rows["seq_len"], rows["test_mean"], ls, color=colour, marker=marker, label=label)
                ax.fill_between(rows["seq_len"], rows["test_mean"] - rows["test_spread"] / 2,
                                rows["test_mean"] + rows["test_spread"] / 2, color=colour, alpha=0.12, lw=0)
            k = chance.get(task)
            if k and k > 1:
                ax.axhline(1.0 / k, color="grey", ls="--", lw=1, label="Random")
            ax.set_xscale("log", base=2)
            ax.set_xlabel("Sequence Length (log scale)")
            ax.set_ylabel("Accuracy")
            ax.set_title(f"{task}: accuracy vs sequence length")
            ax.legend(frameon=False)
        fig.tight_layout()
    rows = [[r.task, r.arch, r.strategy, f"{int(r.seq_len)}", f"{100 * r.test_mean:.1f} ± {100 * r.test_spread:.1f}",
             r.n] for r in sel.itertuples()]
    md = markdown_table(["task", "arch", "strategy", "sequence length", "test acc (%)", "runs"], rows, 3)
    return Figure("fig6_acc_vs_length", "Figure 6: accuracy vs sequence length", sel, md), fig


def write_figures(pretrain_raw: pd.DataFrame, finetune: pd.DataFrame, out_dir: str | Path) -> list[tuple[Figure, Path, Path]]:
    """Every scaling figure whose axis varies: figures/<name>.png + tables/<name>.csv under out_dir."""
    out_dir = Path(out_dir)
    (out_dir / "figures").mkdir(parents=True, exist_ok=True)
    (out_dir / "tables").mkdir(parents=True, exist_ok=True)
    sel = select_pretraining(pretrain_frame(pretrain_raw))
    made = []
    for maker, arg in ((figure5_left, sel), (figure5_right, sel), (figure2_tokens, sel), (figure6_length, finetune)):
        res = maker(arg)
        if res is None:
            continue
        figure, fig = res
        png, csv = out_dir / "figures" / f"{figure.name}.png", out_dir / "tables" / f"{figure.name}.csv"
        save_figure(fig, png)
        plt.close(fig)
        figure.frame.to_csv(csv, index=False)
        made.append((figure, png, csv))
    return made


def scaling_markdown(made: list[tuple[Figure, Path, Path]]) -> str:
    """The summary.md section: each figure, its table, links."""
    if not made:
        return ""
    parts = ["## Scaling (Mamba paper Figures 5–6, seed study Figure 2)",
             "Each point: the validation-selected run of its group (pretraining: the lr with the lowest "
             "validation perplexity, then its test perplexity; fine-tuning: the (lr, batch) with the best mean "
             "validation accuracy, then mean test accuracy ± spread over seeds)."]
    for figure, png, csv in made:
        parts.append(f"### {figure.title}\n\n![{figure.title}](figures/{png.name})\n\n{figure.markdown}\n\n"
                     f"Numbers: `tables/{csv.name}`.")
    return "\n\n".join(parts)
