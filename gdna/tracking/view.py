"""The sweep's saved view in the MLflow UI: what a user sees on first opening the URL `gdna ui` prints.

MLflow 3 opens a runs table with every parent run collapsed and no metric or parameter column. Its
"saved views" (the experiment page's view menu: save, share, reset) live in experiment tags
`mlflow.sharedViewState.<key>` holding `{"name", "createdAt", "updatedAt", "state"}`, where `state` is the
JSON of the runs page's search and UI state; the URL parameter `viewStateShareKey=<key>` opens one. gdna
saves one such view per sweep: runs grouped by stage (`gdna.stage`, each group open: the stage's parent
run and every trial of it), sorted by run name (trials of one architecture and strategy side by side),
with the columns a sweep is read by (status, architecture, strategy, task, lr, batch, seed, fold;
validation / test accuracy and the pretraining loss). (MLflow keeps expanded parents out of saved views,
hence groups rather than nesting.) A user's own changes stay in their browser; the view menu's "Reset to
saved" brings this one back.
"""
from __future__ import annotations

import json
import time

VIEW_KEY = "gdna-stages-and-trials"  # the URL's viewStateShareKey
VIEW_NAME = "gdna: stages and their trials"
SHARED_VIEW_TAG_PREFIX = "mlflow.sharedViewState."  # MLflow's experiment-tag prefix for saved views
SHARE_PARAM = "viewStateShareKey"

COLUMNS = (  # MLflow's column keys: "<type>.`<name>`"
    ("tags", "gdna.status"), ("params", "model.arch"), ("params", "strategy"), ("params", "data.task"),
    ("params", "train.lr"), ("params", "train.batch_size"), ("params", "train.seed"), ("params", "data.fold"),
    ("metrics", "val_acc"), ("metrics", "test_acc"), ("metrics", "test_balanced_acc"), ("metrics", "best_val_loss"),
)


def view_state() -> dict:
    """The runs page's state (search facets + UI state, as MLflow serialises a saved view)."""
    return {
        # search facets (the others keep MLflow's defaults)
        "searchFilter": "", "orderByKey": "tags.`mlflow.runName`", "orderByAsc": True,
        # UI state
        "selectedColumns": [f"{kind}.`{name}`" for kind, name in COLUMNS],
        "groupBy": {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": "gdna.stage"}]},
        "groupsExpanded": {}, "useGroupedValuesInCharts": False,  # (charts: one line per trial)
        "runsHiddenMode": "SHOW_ALL",
    }


def save_default_view(client, experiment_id: str) -> None:
    """Write the sweep's saved view (once; again only if gdna's view changed)."""
    tag = SHARED_VIEW_TAG_PREFIX + VIEW_KEY
    state = json.dumps(view_state(), separators=(",", ":"))
    old = client.get_experiment(experiment_id).tags.get(tag)
    try:
        saved = json.loads(old) if old else {}
    except ValueError:
        saved = {}
    if saved.get("state") == state:
        return
    now = int(time.time() * 1000)
    created = saved.get("createdAt") if isinstance(saved.get("createdAt"), int) else now
    client.set_experiment_tag(experiment_id, tag, json.dumps(
        {"name": VIEW_NAME, "createdAt": created, "updatedAt": now, "state": state}))


def view_url(base_url: str, experiment_id: str) -> str:
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?{SHARE_PARAM}={VIEW_KEY}"
