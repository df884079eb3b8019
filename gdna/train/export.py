"""A finished pretraining's export: `<export_dir>/backbone.pt` then `<export_dir>/done.json` (written last:
its presence means the export is complete). The file names live here and nowhere else.

    backbone.pt = {"model_config": dict, "backbone": state_dict, "metrics": dict, "trial_identity": str, "trial": dict}
    done.json   = {"backbone": "backbone.pt", "metrics": dict, "trial_identity": str, "time": float}
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Mapping

EXPORT_FILE = "backbone.pt"
DONE_FILE = "done.json"


def export_file(export_dir: str | os.PathLike) -> Path:
    return Path(export_dir) / EXPORT_FILE


def is_exported(export_dir: str | os.PathLike) -> bool:
    return (Path(export_dir) / DONE_FILE).is_file()


def write_export(export_dir: str | os.PathLike, backbone: Mapping[str, Any], metrics: Mapping[str, Any],
                 model_config: dict, identity: str, trial: dict) -> Path:
    """backbone.pt, then done.json, each through a temporary name and an atomic rename."""
    import torch

    out = Path(export_dir)
    out.mkdir(parents=True, exist_ok=True)
    clean = {k: v for k, v in metrics.items() if k != "export_path"}
    payload = {"model_config": model_config, "backbone": dict(backbone), "metrics": clean,
               "trial_identity": identity, "trial": trial}
    tmp = out / f"{EXPORT_FILE}.tmp{os.getpid()}"
    torch.save(payload, tmp)
    os.replace(tmp, out / EXPORT_FILE)
    done = {"backbone": EXPORT_FILE, "metrics": clean, "trial_identity": identity, "time": time.time()}
    tmp = out / f"{DONE_FILE}.tmp{os.getpid()}"
    tmp.write_text(json.dumps(done, sort_keys=True, default=_json_default))
    os.replace(tmp, out / DONE_FILE)
    return out / EXPORT_FILE


def read_export_metrics(export_dir: str | os.PathLike) -> dict[str, Any]:
    """Final metrics of a finished pretraining (done.json, else backbone.pt's "metrics")."""
    metrics: dict[str, Any] = {}
    try:
        raw = json.loads((Path(export_dir) / DONE_FILE).read_text() or "{}")
        if isinstance(raw, dict):
            metrics.update(raw.get("metrics", {}) if isinstance(raw.get("metrics"), dict) else {})
            metrics.update({k: v for k, v in raw.items() if k != "metrics"})
    except (OSError, ValueError):
        pass
    if not any(k in metrics for k in ("best_val_loss", "val_loss", "best_val_ppl", "val_ppl")):
        try:
            import torch

            blob = torch.load(Path(export_dir) / EXPORT_FILE, map_location="cpu", weights_only=False)
            metrics.update(blob.get("metrics", {}) or {})
        except Exception:  # noqa: BLE001 - best effort: metrics are for display/selection only
            pass
    return metrics


def _json_default(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return str(v)
