"""kopf peering for several operator replicas: a distinct priority per pod, the peering objects.

With ``--peering=NAME`` kopf pauses every replica that sees a live peer of a higher priority, and
pauses *all* of them when two share one; so each replica needs its own priority. ``hotswap-operator``
derives it from the pod name (``POD_NAME``, the downward API), a stable hash: the same pod keeps
its priority across container restarts, two pods differ. The peering object (a ``KopfPeering`` in
each watched namespace, or one ``ClusterKopfPeering`` with ``--all-namespaces``) must exist before
kopf starts peering; the chart cannot install it with its CRD in one release, so the operator
creates it at startup when it is missing (kopf itself never creates it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import socket
from collections.abc import Mapping, Sequence
from typing import Any

from .kube import KubeClient, KubeError

PEERING_API = "/apis/kopf.dev/v1"


@dataclasses.dataclass(frozen=True)
class Watch:
    """What ``kopf run`` was told on its command line about peering and namespaces."""

    peering: str | None = None  # the peering object's name; None: standalone (or kopf's default)
    priority: int | None = None  # --priority when given
    clusterwide: bool = False
    namespaces: tuple[str, ...] = ()


# Set by cli.main before kopf starts (same process), read by the startup handler.
WATCH = Watch()


def derive_priority(pod_name: str) -> int:
    """A stable priority for a pod name: 1 .. 2**31-1, equal only for equal names (bar collisions)."""
    digest = hashlib.sha256(pod_name.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") % (2**31 - 1) + 1


def pod_name(env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    return env.get("POD_NAME") or env.get("POD_ID") or socket.gethostname()


def _values(argv: Sequence[str], long: tuple[str, ...], short: str) -> list[str]:
    """Every value of an option (``--x=V``, ``--x V``, ``-sV``, ``-s V``) in kopf's argv."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        for name in long:
            if arg.startswith(name + "="):
                out.append(arg[len(name) + 1 :])
            elif arg == name and i + 1 < len(argv):
                out.append(argv[i + 1])
                i += 1
        if arg == short and i + 1 < len(argv):
            out.append(argv[i + 1])
            i += 1
        elif arg.startswith(short) and len(arg) > len(short) and not arg.startswith("--"):
            out.append(arg[len(short) :])
        i += 1
    return out


def parse_watch(argv: Sequence[str], env: Mapping[str, str] | None = None) -> Watch:
    env = os.environ if env is None else env
    names = _values(argv, ("--peering",), "-P")
    peering = names[-1] if names else env.get("KOPF_RUN_PEERING") or None
    if "--standalone" in argv:
        peering = None
    priorities = _values(argv, ("--priority",), "-p")
    return Watch(
        peering=peering,
        priority=int(priorities[-1]) if priorities else None,
        clusterwide="--all-namespaces" in argv or "-A" in argv,
        namespaces=tuple(_values(argv, ("--namespace", "--ns"), "-n")),
    )


def with_priority(argv: Sequence[str], env: Mapping[str, str] | None = None) -> list[str]:
    """kopf's argv, plus ``--priority`` derived from the pod name when peering has none."""
    watch = parse_watch(argv, env)
    if watch.peering is None or watch.priority is not None:
        return list(argv)
    return [*argv, f"--priority={derive_priority(pod_name(env))}"]


def peering_objects(watch: Watch) -> list[tuple[str, dict[str, Any]]]:
    """(collection path, body) of each peering object kopf will look for; none when standalone."""
    if watch.peering is None:
        return []
    meta = {"name": watch.peering, "labels": {"app.kubernetes.io/managed-by": "hotswap-operator"}}
    if watch.clusterwide or not watch.namespaces:
        body = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": meta}
        return [(f"{PEERING_API}/clusterkopfpeerings", body)]
    return [
        (
            f"{PEERING_API}/namespaces/{ns}/kopfpeerings",
            {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {**meta, "namespace": ns}},
        )
        for ns in watch.namespaces
    ]


async def ensure_objects(
    kube: KubeClient, watch: Watch, logger: logging.Logger | logging.LoggerAdapter[Any]
) -> None:
    """Create each missing peering object; another replica creating it first is fine."""
    for path, body in peering_objects(watch):
        name = body["metadata"]["name"]
        if await kube.get(f"{path}/{name}") is not None:
            continue
        try:
            await kube.create(path, body)
            logger.info(f"created the peering object {body['kind']} {name} ({path})")
        except KubeError as exc:
            if exc.status != 409:
                raise
