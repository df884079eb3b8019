"""Credentials in a tracking URI (`http://user:password@host:5000`) never reach MLflow params, tags,
logs or `spec.yaml`: `split_credentials` strips them off the URI and MLflow's own client reads them
from MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (HTTP basic auth), which `apply_credentials`
sets in this process only (Ray workers never talk to MLflow). `redact` is for anything printed.
"""
from __future__ import annotations

import os
import re
from urllib.parse import unquote, urlsplit, urlunsplit

USER_ENV = "MLFLOW_TRACKING_USERNAME"
PASSWORD_ENV = "MLFLOW_TRACKING_PASSWORD"
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/@:\s]*)(?::(?P<pw>[^/@\s]*))?@")


def split_credentials(uri: str) -> tuple[str, str | None, str | None]:
    """`scheme://user:pw@host/...` → (`scheme://host/...`, user, pw); URIs without credentials unchanged.

    Only HTTP(S) tracking servers take basic auth from MLflow's env vars; a database URI
    (postgresql://user:pw@...) is left whole (SQLAlchemy needs it) and only ever printed via `redact`.
    """
    if not uri or not uri.lower().startswith(("http://", "https://")):
        return uri, None, None
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri, None, None
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    clean = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    user = unquote(parts.username) if parts.username is not None else None
    pw = unquote(parts.password) if parts.password is not None else None
    return clean, user, pw


def apply_credentials(uri: str) -> str:
    """Strip credentials off `uri`, export them for MLflow's client in this process; returns the clean URI."""
    clean, user, pw = split_credentials(uri)
    if user:
        os.environ[USER_ENV] = user
    if pw is not None:
        os.environ[PASSWORD_ENV] = pw
    return clean


def redact(text: str) -> str:
    """Replace the password of every `scheme://user:password@` in `text` with `***`."""
    if not text:
        return text
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@" if m["pw"] is not None else m[0], str(text))


def absolute_store(uri: str) -> str:
    """A relative sqlite store (`sqlite:///runs/mlflow.db`: three slashes, a path relative to the working
    directory) made absolute, so that `gdna status` / `analyze` / `ui` find it from anywhere; other URIs unchanged."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri[len(prefix):].startswith("/") or uri[len(prefix):] in ("", ":memory:"):
        return uri
    from pathlib import Path

    return prefix + str(Path(uri[len(prefix):]).expanduser().resolve())
