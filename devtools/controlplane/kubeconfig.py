"""Kubeconfig files with everything inline, so any client reads them (kopf's own login included,
which takes neither file references for a token nor ``tokenFile``)."""

from __future__ import annotations

import base64
from pathlib import Path

import yaml


def write_kubeconfig(
    path: Path,
    *,
    server: str,
    ca: Path,
    user: str,
    cert: Path | None = None,
    key: Path | None = None,
    token: str | None = None,
    namespace: str | None = None,
) -> Path:
    """A one-context kubeconfig at ``path``, replaced atomically (readers never see half a file:
    the kubelet rewrites ServiceAccount kubeconfigs when it renews their token)."""
    creds: dict[str, str] = {}
    if cert is not None and key is not None:
        creds["client-certificate-data"] = base64.b64encode(cert.read_bytes()).decode()
        creds["client-key-data"] = base64.b64encode(key.read_bytes()).decode()
    if token is not None:
        creds["token"] = token
    context: dict[str, str] = {"cluster": "hotswap", "user": user}
    if namespace:
        context["namespace"] = namespace
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "hotswap",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca.read_bytes()).decode(),
                },
            }
        ],
        "users": [{"name": user, "user": creds}],
        "contexts": [{"name": "hotswap", "context": context}],
        "current-context": "hotswap",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
    tmp.chmod(0o600)
    tmp.replace(path)
    return path
