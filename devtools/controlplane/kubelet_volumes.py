"""A pod's volumes as folders under its pod folder, kept in sync like a kubelet keeps them.

Supported: ``emptyDir``, ``secret``, ``configMap``, ``downwardAPI``, ``projected`` (secret,
configMap, downwardAPI and ``serviceAccountToken`` sources), ``hostPath`` (the host's own folder:
it *is* the host) and ``persistentVolumeClaim`` (one folder per claim, shared by every pod that
mounts it, like a ReadWriteMany volume). Secret, ConfigMap, downward API and token contents are
refreshed every ``sync`` seconds (a kubelet takes up to a minute or so); each file is replaced
atomically, so a reader sees the old content or the new one, never half of it.

ServiceAccount tokens come from the TokenRequest API, bound to the pod (the kubelet's own
identity may only ask for tokens of pods bound to its node: the Node authorizer and NodeRestriction
check it), and are renewed at 80% of their lifetime, as a kubelet does.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devtools.controlplane.client import ApiError, Client
from devtools.controlplane.kubelet_env import ConfigError, expand, field_ref, resource_ref

JSON = dict[str, Any]


class VolumeError(Exception):
    """A volume cannot be set up yet (a missing Secret, say); the pod waits and retries."""


@dataclass
class _Token:
    token: str
    renew_at: float


class Volumes:
    def __init__(
        self, pod: JSON, pod_dir: Path, api: Client, *, shared_root: Path, node_capacity: Mapping[str, str]
    ) -> None:
        self.pod = pod
        self.root = pod_dir / "volumes"
        self.api = api
        self.shared_root = shared_root
        self.node_capacity = node_capacity
        self.dirs: dict[str, Path] = {}
        self._written: dict[str, set[str]] = {}
        self._tokens: dict[tuple[str, str], _Token] = {}

    @property
    def _ns(self) -> str:
        return str(self.pod["metadata"]["namespace"])

    # -- set-up and refresh ----------------------------------------------------------------------

    async def sync(self) -> None:
        """Create every volume's folder and (re)write its files. Raises VolumeError if a source
        it needs is missing (the first time: the pod does not start; later: the old files stay)."""
        for vol in self.pod["spec"].get("volumes", []):
            await self._sync_volume(vol)

    async def _sync_volume(self, vol: JSON) -> None:
        name = vol["name"]
        if "hostPath" in vol:
            path = Path(vol["hostPath"]["path"])
            if vol["hostPath"].get("type") in ("DirectoryOrCreate", None, ""):
                path.mkdir(parents=True, exist_ok=True)
            self.dirs[name] = path
            return
        if "persistentVolumeClaim" in vol:
            claim = vol["persistentVolumeClaim"]["claimName"]
            path = self.shared_root / "claims" / self._ns / claim
            path.mkdir(parents=True, exist_ok=True)
            self.dirs[name] = path
            return
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        self.dirs[name] = path
        if "emptyDir" in vol:
            return
        files: dict[str, tuple[bytes, int]] = {}
        if "secret" in vol:
            src = vol["secret"]
            await self._add_keyed(
                files, "secret", src.get("secretName", ""), src, src.get("defaultMode", 0o644)
            )
        elif "configMap" in vol:
            src = vol["configMap"]
            await self._add_keyed(files, "configmap", src.get("name", ""), src, src.get("defaultMode", 0o644))
        elif "downwardAPI" in vol:
            self._add_downward(files, vol["downwardAPI"], vol["downwardAPI"].get("defaultMode", 0o644))
        elif "projected" in vol:
            proj = vol["projected"]
            mode = proj.get("defaultMode", 0o644)
            for source in proj.get("sources", []):
                if "secret" in source:
                    src = source["secret"]
                    await self._add_keyed(files, "secret", src.get("name", ""), src, mode)
                elif "configMap" in source:
                    src = source["configMap"]
                    await self._add_keyed(files, "configmap", src.get("name", ""), src, mode)
                elif "downwardAPI" in source:
                    self._add_downward(files, source["downwardAPI"], mode)
                elif "serviceAccountToken" in source:
                    await self._add_token(files, name, source["serviceAccountToken"], mode)
                else:
                    raise VolumeError(f"volume {name}: unsupported projected source {sorted(source)}")
        else:
            kinds = sorted(k for k in vol if k != "name")
            raise VolumeError(f"volume {name}: unsupported volume type {kinds} (process kubelet)")
        self._write(name, path, files)

    # -- sources ---------------------------------------------------------------------------------

    async def read_object(self, kind: str, name: str, optional: bool) -> dict[str, bytes] | None:
        """The data of a ConfigMap or Secret as bytes per key; None if absent and optional."""
        plural = "secrets" if kind == "secret" else "configmaps"
        try:
            obj = await self.api.get(f"/api/v1/namespaces/{self._ns}/{plural}/{name}")
        except ApiError as exc:
            if exc.status == 404 and optional:
                return None
            raise VolumeError(f"{kind} {self._ns}/{name}: {exc.message}") from None
        data: dict[str, bytes] = {}
        if kind == "secret":
            for k, v in (obj.get("data") or {}).items():
                data[k] = base64.b64decode(v)
        else:
            for k, v in (obj.get("data") or {}).items():
                data[k] = v.encode()
            for k, v in (obj.get("binaryData") or {}).items():
                data[k] = base64.b64decode(v)
        return data

    async def _add_keyed(
        self, files: dict[str, tuple[bytes, int]], kind: str, obj_name: str, src: JSON, mode: int
    ) -> None:
        data = await self.read_object(kind, obj_name, bool(src.get("optional")))
        if data is None:
            return
        items = src.get("items")
        if not items:
            for key, value in data.items():
                files[key] = (value, mode)
            return
        for item in items:
            if item["key"] not in data:
                if src.get("optional"):
                    continue
                raise VolumeError(f"{kind} {self._ns}/{obj_name} has no key {item['key']!r}")
            files[item["path"]] = (data[item["key"]], item.get("mode", mode))

    def _add_downward(self, files: dict[str, tuple[bytes, int]], src: JSON, mode: int) -> None:
        for item in src.get("items", []):
            try:
                if "fieldRef" in item:
                    value = field_ref(self.pod, item["fieldRef"]["fieldPath"])
                else:
                    ref = item["resourceFieldRef"]
                    containers = {c["name"]: c for c in self.pod["spec"].get("containers", [])}
                    value = resource_ref(
                        containers.get(ref.get("containerName", ""), {}), ref, self.node_capacity
                    )
            except (ConfigError, KeyError) as exc:
                raise VolumeError(f"downwardAPI {item.get('path')}: {exc}") from None
            files[item["path"]] = (value.encode(), item.get("mode", mode))

    async def _add_token(self, files: dict[str, tuple[bytes, int]], vol: str, src: JSON, mode: int) -> None:
        key = (vol, src["path"])
        cached = self._tokens.get(key)
        if cached is None or time.time() >= cached.renew_at:
            cached = await self._request_token(src)
            self._tokens[key] = cached
        files[src["path"]] = (cached.token.encode(), mode)

    async def _request_token(self, src: JSON) -> _Token:
        meta, spec = self.pod["metadata"], self.pod["spec"]
        sa = spec.get("serviceAccountName") or "default"
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [src["audience"]] if src.get("audience") else [],
                "expirationSeconds": int(src.get("expirationSeconds", 3600)),
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            },
        }
        try:
            resp = await self.api.create(f"/api/v1/namespaces/{self._ns}/serviceaccounts/{sa}/token", body)
        except ApiError as exc:
            raise VolumeError(f"TokenRequest for serviceaccount {self._ns}/{sa}: {exc.message}") from None
        now = time.time()
        expires = dt.datetime.fromisoformat(resp["status"]["expirationTimestamp"].replace("Z", "+00:00"))
        ttl = max(expires.timestamp() - now, 60.0)
        return _Token(token=resp["status"]["token"], renew_at=now + 0.8 * ttl)

    # -- files -----------------------------------------------------------------------------------

    def _write(self, vol: str, folder: Path, files: dict[str, tuple[bytes, int]]) -> None:
        for rel, (content, mode) in files.items():
            target = folder / rel
            if not target.resolve().is_relative_to(folder.resolve()):
                raise VolumeError(f"volume {vol}: path {rel!r} leaves the volume")
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                if target.read_bytes() == content and (target.stat().st_mode & 0o777) == mode:
                    continue
            except OSError:
                pass
            tmp = target.with_name(f".{target.name}.tmp")
            tmp.write_bytes(content)
            os.chmod(tmp, mode)
            tmp.replace(target)
        for rel in self._written.get(vol, set()) - set(files):
            (folder / rel).unlink(missing_ok=True)
        self._written[vol] = set(files)

    # -- mounts ----------------------------------------------------------------------------------

    def mounts(self, container: JSON, env: Mapping[str, str]) -> dict[str, Path]:
        """mountPath -> host folder for ``container`` (subPath / subPathExpr applied)."""
        result: dict[str, Path] = {}
        for mount in container.get("volumeMounts", []):
            base = self.dirs.get(mount["name"])
            if base is None:
                raise ConfigError(f"volumeMount {mount['name']!r}: no such volume in the pod")
            sub = mount.get("subPath") or (
                expand(mount["subPathExpr"], env) if mount.get("subPathExpr") else ""
            )
            path = base / sub if sub else base
            if sub:
                if not path.resolve().is_relative_to(base.resolve()):
                    raise ConfigError(f"volumeMount {mount['name']!r}: subPath {sub!r} leaves the volume")
                if not path.exists():
                    path.mkdir(parents=True, exist_ok=True)
            result[mount["mountPath"]] = path
        return result
