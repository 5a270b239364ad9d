"""A container's argv and environment, as a kubelet computes them, for a process instead of an image.

Two remaps stand in for what a container would isolate, and they are the whole difference:

* Paths: a process sees the host's filesystem, so every ``mountPath`` of the container is rewritten
  to the folder that holds that volume on the host, wherever it appears in the command, the args,
  literal env values and exec hooks/probes (``--token-file=/etc/x/token`` becomes
  ``--token-file=<pod dir>/volumes/x/token``). ``HOTSWAP_KUBELET_MOUNTS`` gives the full map (JSON)
  to anything that needs it.
* Addresses: a pod has its own network namespace, where ``127.0.0.1``, ``localhost`` and
  ``0.0.0.0`` mean "this pod". Here the pod's address stands in for all three (so two pods can both
  bind port 8080, and a sidecar reaches its neighbour on "127.0.0.1").
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

JSON = dict[str, Any]

_VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")
_POD_LOCAL = re.compile(r"(?<![\w.-])(?:127\.0\.0\.1|0\.0\.0\.0|localhost)(?![\w-]|\.\w)")
# Variables a process inherits from the harness (locale and time zone); nothing else leaks in.
_INHERITED = ("LANG", "LC_ALL", "LC_CTYPE", "TZ")


class ConfigError(Exception):
    """The container cannot be started as specified (CreateContainerConfigError in a kubelet)."""


def expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: known variables are replaced, unknown ones stay as
    written, ``$$`` escapes a ``$``."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1)
        return env[name] if name in env else m.group(0)

    return _VAR_REF.sub(sub, value)


class Rewriter:
    """Rewrites in-pod paths and pod-local addresses in a string (see the module docstring)."""

    def __init__(self, mounts: Mapping[str, Path], pod_ip: str) -> None:
        self.mounts = {k.rstrip("/") or "/": v for k, v in mounts.items()}
        self.pod_ip = pod_ip
        # One pass with the longest mount path first, so a replaced host path (which may itself
        # start with "/tmp") is never rewritten again. A mount path matches only as a whole path
        # prefix: "/tmp" in "/tmpfoo" or "/var/tmp" is left alone.
        paths = sorted((p for p in self.mounts if p != "/"), key=len, reverse=True)
        self._paths = (
            re.compile(r"(?<![\w./-])(" + "|".join(re.escape(p) for p in paths) + r")(?=/|$|[^\w.-])")
            if paths
            else None
        )

    def __call__(self, value: str) -> str:
        if self._paths is not None:
            value = self._paths.sub(lambda m: str(self.mounts[m.group(1)]), value)
        return _POD_LOCAL.sub(self.pod_ip, value)

    def host_path(self, in_pod: str) -> str:
        """``in_pod`` (an absolute in-container path) on the host; unchanged if no mount holds it."""
        return self(in_pod) if in_pod.startswith("/") else in_pod


def field_ref(pod: JSON, path: str) -> str:
    """The downward API: the fields of the pod a container may read (fieldRef.fieldPath)."""
    meta, spec, status = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status", {})
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return str(meta.get(m.group(1), {}).get(m.group(2), ""))
    simple: dict[str, Any] = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.hostIP": status.get("hostIP"),
        "status.hostIPs": ",".join(i["ip"] for i in status.get("hostIPs", [])),
        "status.podIP": status.get("podIP"),
        "status.podIPs": ",".join(i["ip"] for i in status.get("podIPs", [])),
    }
    if path in ("metadata.labels", "metadata.annotations"):
        items = meta.get(path.split(".")[1], {})
        return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
    if path not in simple:
        raise ConfigError(f"unsupported fieldRef {path!r}")
    return "" if simple[path] is None else str(simple[path])


def resource_ref(container: JSON, ref: JSON, node_capacity: Mapping[str, str]) -> str:
    """resourceFieldRef: the container's limit (the node's capacity if unset) or request."""
    resource = ref["resource"]
    kind, _, name = resource.partition(".")
    resources = container.get("resources", {})
    value = resources.get(kind, {}).get(name)
    if value is None and kind == "limits":
        value = node_capacity.get(name, "0")
    if value is None:
        value = "0"
    divisor = ref.get("divisor")
    if divisor in (None, "", "1"):
        return str(value)
    return str(max(1, int(-(-_quantity(str(value)) // _quantity(str(divisor))))))


_SUFFIX = {
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def _quantity(q: str) -> float:
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", q)
    if not m:
        raise ConfigError(f"cannot parse quantity {q!r}")
    return float(m.group(1)) * _SUFFIX.get(m.group(2), 1.0)


def container_env(
    pod: JSON,
    container: JSON,
    *,
    base: Mapping[str, str],
    lookup: Callable[[str, str, str | None, bool], Any],
    rewrite: Rewriter,
    node_capacity: Mapping[str, str],
) -> dict[str, str]:
    """The environment of ``container``: inherited locale, ``base`` (the kubelet's own variables),
    ``envFrom``, then ``env`` in order (each value may use ``$(VAR)`` of those before it).

    ``lookup(kind, name, key, optional)`` reads a ConfigMap or Secret: with ``key`` the value (None
    if absent and optional), without it the whole data map (for envFrom).
    """
    env: dict[str, str] = {k: os.environ[k] for k in _INHERITED if k in os.environ}
    env.update(base)
    for source in container.get("envFrom", []):
        prefix = source.get("prefix", "")
        for kind, key in (("configmap", "configMapRef"), ("secret", "secretRef")):
            if key in source:
                ref = source[key]
                data = lookup(kind, ref["name"], None, bool(ref.get("optional")))
                for k, v in (data or {}).items():
                    env[prefix + k] = v
    for item in container.get("env", []):
        name = item["name"]
        if "value" in item:
            env[name] = rewrite(expand(str(item["value"]), env))
            continue
        source = item.get("valueFrom")
        if not source:
            env[name] = ""
            continue
        if "fieldRef" in source:
            env[name] = field_ref(pod, source["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in source:
            env[name] = resource_ref(container, source["resourceFieldRef"], node_capacity)
        elif "configMapKeyRef" in source or "secretKeyRef" in source:
            kind, ref = (
                ("configmap", source["configMapKeyRef"])
                if "configMapKeyRef" in source
                else ("secret", source["secretKeyRef"])
            )
            value = lookup(kind, ref["name"], ref["key"], bool(ref.get("optional")))
            if value is not None:
                env[name] = value
        else:
            raise ConfigError(f"env {name}: unsupported valueFrom {sorted(source)}")
    return env


def resolve_argv(
    container: JSON,
    env: Mapping[str, str],
    rewrite: Rewriter,
    *,
    images: Mapping[str, Sequence[str]],
    commands: Mapping[str, Sequence[str]],
    search_path: Sequence[Path],
) -> list[str]:
    """command + args (``$(VAR)`` expanded, remapped), the executable found on the host.

    No ``command``: the image's entrypoint comes from ``images`` (image name without tag or digest ->
    argv prefix), as a container runtime would take it from the image. The first word is then
    mapped through ``commands`` (name -> argv prefix), or searched in ``search_path`` (the
    project's .venv/bin first), then in PATH.
    """
    command = [str(c) for c in container.get("command", [])]
    args = [str(a) for a in container.get("args", [])]
    if not command:
        image = image_name(container.get("image", ""))
        entrypoint = images.get(image) or images.get(image.rsplit("/", 1)[-1])
        if not entrypoint:
            raise ConfigError(
                f"image {container.get('image')!r} has no entrypoint mapped (KubeletConfig.images) and "
                "the container sets no command"
            )
        command = list(entrypoint)
    argv = [rewrite(expand(a, env)) for a in command + args]
    return resolve_executable(argv, commands=commands, search_path=search_path)


def resolve_executable(
    argv: list[str], *, commands: Mapping[str, Sequence[str]], search_path: Sequence[Path]
) -> list[str]:
    if not argv:
        raise ConfigError("empty command")
    first = argv[0]
    if first in commands:
        return [*commands[first], *argv[1:]]
    if "/" in first:
        return argv
    for folder in search_path:
        candidate = folder / first
        if os.access(candidate, os.X_OK) and candidate.is_file():
            return [str(candidate), *argv[1:]]
    found = shutil.which(first)
    if found is None:
        raise ConfigError(f"executable {first!r} not found in {[str(p) for p in search_path]} or PATH")
    return [found, *argv[1:]]


def image_name(image: str) -> str:
    """``registry/repo:tag@sha256:...`` -> ``registry/repo`` (also matched without the registry)."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: len(name) - len(last)] + last.split(":", 1)[0]
    return name


def mounts_env(mounts: Mapping[str, Path]) -> str:
    return json.dumps({k: str(v) for k, v in sorted(mounts.items())})
