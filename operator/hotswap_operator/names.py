"""Every key, child name, annotation and API path the operator builds, built here and only here.

dask-kubernetes once built the same lock key two ways in two places (``ns/name`` vs ``name/ns``)
and it never matched; one helper per name makes that impossible.
"""

from __future__ import annotations

import ipaddress
import uuid

from .models import GROUP, PLURAL, VERSION

COMPONENT = "hotswap-operator"
FIELD_MANAGER = COMPONENT

# Annotation on a RerankerModel asking for a manual rollback ("true", or a version id from history).
ROLLBACK_ANNOTATION = f"{GROUP}/rollback"

# The boot ConfigMap: the key the pods mount as their agent's boot file.
BOOT_KEY = "boot.json"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MODEL_LABEL = f"{GROUP}/rerankermodel"


def resource_key(namespace: str, name: str) -> str:
    """The key of one RerankerModel in the operator's in-memory registries."""
    return f"{namespace}/{name}"


def boot_configmap(name: str, override: str | None = None) -> str:
    """The ConfigMap holding the last-good version of RerankerModel ``name``."""
    return override or f"{name}-boot"


def event_name(involved: str) -> str:
    """A unique Event name for an object (the API server's ``generateName`` style, made here)."""
    return f"{involved}.{uuid.uuid4().hex[:16]}"


def pod_url(ip: str, port: int, path: str = "", scheme: str = "http") -> str:
    """The URL of ``path`` on port ``port`` of the pod at ``ip`` (its agent or its server).

    An IPv6 address goes in brackets (``http://[fd00::1]:9090/v1/status``)."""
    host = f"[{ip}]" if ipaddress.ip_address(ip).version == 6 else ip
    return f"{scheme}://{host}:{port}{path}"


def model_path(namespace: str, name: str | None = None, subresource: str | None = None) -> str:
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"
    if name is not None:
        path += f"/{name}"
        if subresource is not None:
            path += f"/{subresource}"
    return path


def core_path(kind_plural: str, namespace: str | None = None, name: str | None = None) -> str:
    """A core/v1 path: pods, configmaps, events, namespaces."""
    path = "/api/v1"
    if namespace is not None:
        path += f"/namespaces/{namespace}"
    path += f"/{kind_plural}"
    if name is not None:
        path += f"/{name}"
    return path
