"""`gdna cluster check cluster.yaml`: offline validation of a Ray cluster config for gdna sweeps.

First Ray's own: the autoscaler's `prepare_config` (defaults merged the way `ray up` merges them) and
`validate_config` (Ray's JSON schema + its cross-field checks). Then gdna's rules, each problem one line
`<file>: <field>: <what is wrong>`:
- the head runs the MLflow server (`gdna cluster mlflow-server`), bound to a private address: never
  0.0.0.0, and not 127.0.0.1 once there are worker nodes; no sqlite/file/localhost tracking URI either;
- nothing but SSH open to the world (provider.security_group.IpPermissions, `--dashboard-host`);
- the sweeps' storage (`--storage`) is on a filesystem every node mounts from `$GDNA_SHARED_FS`
  (initialization_commands), not a literal server id, not /tmp or a home directory;
- at least one GPU worker type; the head advertises the trial-driver resource and no worker does;
- every node installs gdna with the `[cuda]` extra; the repository sync leaves `.venv` behind.
A `cluster.env` next to the file (git-ignored: GDNA_SHARED_FS, GDNA_MLFLOW_BACKEND_URI) is checked when present.
"""
from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path
from typing import Any, Iterable

import yaml

from gdna.cluster import DRIVER_RESOURCE

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
WORLD_HOSTS = ("0.0.0.0", "::", "[::]")
WORLD_CIDRS = ("0.0.0.0/0", "::/0")
SHARED_FS_ENV = "GDNA_SHARED_FS"


def check_file(path: str | Path) -> tuple[list[str], list[str]]:
    """(problems, notes) for a cluster config file; each problem is one line naming the file and field."""
    p = Path(path)
    name = str(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except OSError as e:
        return [f"{name}: cannot read ({e.strerror or e})"], []
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "YAML"
        return [f"{name}: {where}: not valid YAML ({getattr(e, 'problem', None) or str(e).splitlines()[0]})"], []
    problems = [f"{name}: {m}" for m in check_config(raw)]
    notes = []
    env = p.parent / "cluster.env"
    if env.is_file():
        problems += [f"{env}: {m}" for m in check_env_file(env)]
    else:
        notes.append(f"no {env}: `ray up` stops at its first command until cluster.env sets {SHARED_FS_ENV} (see README 'On a cluster')")
    return problems, notes


def check_env_file(path: Path) -> list[str]:
    vals = {}
    for i, line in enumerate(path.read_text().splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        s = s[len("export "):] if s.startswith("export ") else s
        if "=" not in s:
            return [f"line {i}: expected NAME=value"]
        k, _, v = s.partition("=")
        vals[k.strip()] = v.strip().strip("'\"")
    if not vals.get(SHARED_FS_ENV):
        return [f"{SHARED_FS_ENV}: not set (the NFS export every node mounts, e.g. fs-XXXX.efs.<region>.amazonaws.com:/)"]
    return []


def ray_schema_problem(config: Any) -> str | None:
    """Ray's own verdict (prepare_config + validate_config), as one line, or None."""
    if not isinstance(config, dict):
        return "(top level): expected a mapping"
    from ray.autoscaler._private.util import prepare_config, validate_config

    try:
        import jsonschema
    except ImportError:  # ray[default] brings it
        jsonschema = None
    try:
        validate_config(prepare_config(copy.deepcopy(config)))
    except Exception as e:  # noqa: BLE001 - Ray raises ValidationError, ValueError, KeyError, AssertionError...
        if jsonschema is not None and isinstance(e, jsonschema.ValidationError):
            where = ".".join(str(x) for x in e.absolute_path) or "(top level)"
            return f"{where}: {e.message.splitlines()[0]} (Ray's cluster schema)"
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        return f"(Ray's cluster config check): {msg}"
    return None


def check_config(config: Any) -> list[str]:
    """Problems with a parsed cluster config (Ray's schema first: if it fails, only that)."""
    bad = ray_schema_problem(config)
    if bad:
        return [bad]
    from ray.autoscaler._private.util import prepare_config

    cfg = prepare_config(copy.deepcopy(config))
    # commands as written (prepare_config copies setup_commands into head_/worker_setup_commands)
    for k in ("setup_commands", "head_setup_commands", "worker_setup_commands"):
        cfg[k] = list(config.get(k) or [])
    problems: list[str] = []
    for rule in (_rule_node_types, _rule_ingress, _rule_mlflow, _rule_tracking_uris, _rule_storage, _rule_setup):
        problems += rule(cfg)
    return problems


# --------------------------------------------------------------------------------------------
def _worker_types(cfg: dict) -> dict[str, dict]:
    head = cfg["head_node_type"]
    return {k: v for k, v in cfg["available_node_types"].items() if k != head}


def _has_workers(cfg: dict) -> bool:
    return cfg.get("max_workers", 0) > 0 and any(t.get("max_workers", 0) > 0 for t in _worker_types(cfg).values())


def _rule_node_types(cfg: dict) -> list[str]:
    out = []
    types = cfg["available_node_types"]
    head = cfg["head_node_type"]
    if not any(float(t.get("resources", {}).get("GPU", 0)) >= 1 and t.get("max_workers", 0) >= 1
               for t in _worker_types(cfg).values()):
        out.append("available_node_types: no GPU worker type (a worker type with resources.GPU >= 1 and max_workers >= 1)")
    if not float(types[head].get("resources", {}).get(DRIVER_RESOURCE, 0)) > 0:
        out.append(f"available_node_types.{head}.resources: the head does not advertise {DRIVER_RESOURCE!r} "
                   "(trial drivers would land on workers that can disappear)")
    for name, t in _worker_types(cfg).items():
        if float(t.get("resources", {}).get(DRIVER_RESOURCE, 0)) > 0:
            out.append(f"available_node_types.{name}.resources: a worker type advertises {DRIVER_RESOURCE!r} (only the head may)")
    return out


def _rule_ingress(cfg: dict) -> list[str]:
    out = []
    perms = (cfg.get("provider", {}).get("security_group") or {}).get("IpPermissions") or []
    for i, p in enumerate(perms):
        cidrs = [r.get("CidrIp") for r in p.get("IpRanges", [])] + [r.get("CidrIpv6") for r in p.get("Ipv6Ranges", [])]
        if not any(c in WORLD_CIDRS for c in cidrs):
            continue
        ssh = str(p.get("IpProtocol")) == "tcp" and p.get("FromPort") == 22 and p.get("ToPort") == 22
        if not ssh:
            out.append(f"provider.security_group.IpPermissions[{i}]: ports {p.get('FromPort')}-{p.get('ToPort')} open to the world "
                       "(only SSH may be; reach the dashboard and MLflow through an SSH port forward)")
    for field, cmd in _commands(cfg, ("head_start_ray_commands",)):
        host = _flag(cmd, "--dashboard-host")
        if host in WORLD_HOSTS:
            out.append(f"{field}: `ray start --dashboard-host={host}` exposes the dashboard on every interface (leave it on 127.0.0.1)")
    return out


def _mlflow_commands(cfg: dict) -> list[tuple[str, list[str]]]:
    found = []
    for field, cmd in _commands(cfg, ("head_setup_commands", "head_start_ray_commands")):
        for i, tok in enumerate(cmd):
            if tok == "mlflow-server" and i >= 2 and cmd[i - 1] == "cluster" and cmd[i - 2].endswith("gdna"):
                found.append((field, cmd[i:]))
            elif tok == "server" and i >= 1 and cmd[i - 1].endswith("mlflow"):
                found.append((field, cmd[i:]))
    return found


def _rule_mlflow(cfg: dict) -> list[str]:
    found = _mlflow_commands(cfg)
    if not found:
        return ["head_start_ray_commands: no MLflow server on the head (`gdna cluster mlflow-server --storage <shared path>`)"]
    out = []
    for field, cmd in found:
        host = _flag(cmd, "--host", "-h")
        if host in WORLD_HOSTS:
            out.append(f"{field}: the MLflow server binds {host} (every interface): bind the head's private address (the default of gdna cluster mlflow-server)")
        elif host in LOCAL_HOSTS and _has_workers(cfg):
            out.append(f"{field}: the MLflow server binds {host}: unreachable from the worker nodes (bind the head's private address)")
        elif host is None and cmd[0] == "server":
            out.append(f"{field}: `mlflow server` without --host binds 127.0.0.1: use `gdna cluster mlflow-server` (binds the head's private address)")
    return out


_URI_ASSIGN = re.compile(r"^(?:export\s+)?(GDNA_TRACKING_URI|MLFLOW_TRACKING_URI)=(.*)$")


def _rule_tracking_uris(cfg: dict) -> list[str]:
    out = []
    workers = _has_workers(cfg)
    for field, cmd in _commands(cfg):
        uris = [v for v in [_flag(cmd, "--tracking-uri")] if v]
        uris += [m.group(2) for tok in cmd for m in [_URI_ASSIGN.match(tok)] if m]
        for uri in uris:
            u = uri.strip("'\"")
            host = re.sub(r"^[a-z+]+://(?:[^@/]*@)?", "", u).split("/")[0].rsplit(":", 1)[0]
            if u.startswith(("sqlite:", "file:")) or "://" not in u:
                out.append(f"{field}: tracking URI {u!r} is a local store: use the head's MLflow server (http://<head private IP>:5000)")
            elif workers and host in LOCAL_HOSTS:
                out.append(f"{field}: tracking URI {u!r} names localhost: not reachable from the workers (use the head's private address)")
    return out


def _rule_storage(cfg: dict) -> list[str]:
    servers = _mlflow_commands(cfg)
    storages = [(f, _flag(cmd, "--storage")) for f, cmd in servers if cmd[0] == "mlflow-server"]
    storages = [(f, s) for f, s in storages if s]
    if not servers:
        return []  # reported by _rule_mlflow
    if not storages:
        return ["head_start_ray_commands: no shared storage path (`gdna cluster mlflow-server --storage <path>`)"]
    mounts = _mounts(cfg.get("initialization_commands", []))
    out = []
    for name, t in cfg["available_node_types"].items():
        if "initialization_commands" in t and set(_mounts(t["initialization_commands"])) != set(mounts):
            out.append(f"available_node_types.{name}.initialization_commands: overrides the shared-storage mount of every other node")
    if not mounts:
        out.append(f"initialization_commands: no shared filesystem mounted on every node (mount ${SHARED_FS_ENV} at the storage path)")
    for target, source in mounts.items():
        if SHARED_FS_ENV not in source:
            out.append(f"initialization_commands: mounts {source!r} at {target}: the shared filesystem must come from ${SHARED_FS_ENV} (cluster.env), not a literal id")
    for field, s in storages:
        if not s.startswith("/") or s == "/tmp" or s.startswith(("/tmp/", "~", "/home/", "$HOME", "/root")):
            out.append(f"{field}: --storage {s} is not a shared path (an absolute mount point such as /mnt/gdna)")
        elif mounts and not any(s == m or s.startswith(m.rstrip("/") + "/") for m in mounts):
            out.append(f"{field}: --storage {s} is not on the shared mount ({', '.join(mounts)})")
    return out


def _rule_setup(cfg: dict) -> list[str]:
    out = []
    setup = " ".join(str(c) for c in cfg.get("setup_commands", []))
    if "[cuda]" not in setup:
        out.append("setup_commands: gdna is not installed with the [cuda] extra on every node (pip install -e '.[cuda]')")
    for remote, local in (cfg.get("file_mounts") or {}).items():
        if str(local).rstrip("/") in (".", "./") and not any(".venv" in str(x) for x in cfg.get("rsync_exclude") or []):
            out.append(f"rsync_exclude: file_mounts copies this repository to {remote} including .venv (add '.venv' to rsync_exclude)")
    return out


# --------------------------------------------------------------------------------------------
def _commands(cfg: dict, fields: Iterable[str] | None = None) -> list[tuple[str, list[str]]]:
    """(field, tokens) for every command of the given fields (top level and per node type)."""
    fields = tuple(fields or ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
                              "head_start_ray_commands", "worker_start_ray_commands"))
    out = []
    sources = [("", cfg)] + [(f"available_node_types.{n}.", t) for n, t in cfg.get("available_node_types", {}).items()]
    for prefix, src in sources:
        for f in fields:
            for i, c in enumerate(src.get(f) or []):
                for part in re.split(r"&&|\|\||;", str(c)):
                    try:
                        toks = shlex.split(part, comments=False)
                    except ValueError:
                        toks = part.split()
                    if toks:
                        out.append((f"{prefix}{f}[{i}]", toks))
    return out


def _flag(tokens: list[str], *names: str) -> str | None:
    for i, t in enumerate(tokens):
        for n in names:
            if t == n and i + 1 < len(tokens):
                return tokens[i + 1]
            if t.startswith(n + "="):
                return t[len(n) + 1:]
    return None


def _mounts(commands: list) -> dict[str, str]:
    """{mount point: source} of the `mount -t nfs*` commands in a command list."""
    out = {}
    for c in commands or []:
        for part in re.split(r"&&|\|\||;|\(|\)", str(c)):
            try:
                toks = shlex.split(part)
            except ValueError:
                toks = part.split()
            if "mount" not in toks:
                continue
            args = toks[toks.index("mount") + 1:]
            pos, skip = [], False
            for a in args:
                if skip:
                    skip = False
                    continue
                if a in ("-t", "-o"):
                    skip = True
                    continue
                if a.startswith("-"):
                    continue
                pos.append(a)
            if len(pos) >= 2:
                out[pos[-1]] = pos[-2]
    return out
