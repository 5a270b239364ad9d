"""The reconcile loop against a recording fake API and fake agents: a settled resource writes nothing."""

from __future__ import annotations

import json
import logging
from typing import Any

from hotswap_operator import names
from hotswap_operator.config import Config
from hotswap_operator.observed import AgentStatus
from hotswap_operator.rollout import Reconciler, Runtime

from .sim import digest_of

NS, NAME = "default", "reranker"


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


class FakeKube:
    """Objects by path; every write recorded."""

    def __init__(self, objects: dict[str, dict[str, Any]]) -> None:
        self.objects = objects
        self.writes: list[tuple[str, str, dict[str, Any]]] = []

    async def get(self, path: str) -> dict[str, Any] | None:
        obj = self.objects.get(path)
        return json.loads(json.dumps(obj)) if obj is not None else None

    async def list(self, path: str, *, label_selector: str | None = None) -> list[dict[str, Any]]:
        prefix = path + "/"
        return [json.loads(json.dumps(o)) for p, o in self.objects.items() if p.startswith(prefix)]

    async def patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.writes.append(("patch", path, body))
        target = self.objects[path.removesuffix("/status")]
        _merge(target, body)
        return target

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.writes.append(("create", path, body))
        if body.get("kind") != "Event":
            self.objects[f"{path}/{body['metadata']['name']}"] = body
        return body

    async def close(self) -> None:
        pass


class FakeAgents:
    def __init__(self, version: str) -> None:
        self.version = version

    async def run(self, ip: str, kind: str, body: dict[str, Any], *, timeout: float) -> dict[str, Any]:
        assert kind == "verify", kind  # the pods already serve the spec's version: only verified
        return {"version": self.version, "ok": True}

    async def server_metrics(self, ip: str) -> tuple[float, float]:
        return (0.0, 0.0)

    async def status(self, ip: str) -> AgentStatus:
        ref = {"version": self.version, "digest": digest_of(self.version)}
        return AgentStatus.model_validate(
            {"pod": ip, "active": ref, "onDisk": [ref], "server": {"reachable": True}}
        )


def _world() -> FakeKube:
    objects: dict[str, dict[str, Any]] = {
        names.model_path(NS, NAME): {
            "metadata": {"name": NAME, "namespace": NS, "generation": 1, "uid": "u1"},
            "spec": {
                "selector": {"matchLabels": {"app": "reranker"}},
                "version": "v1",
                "source": {"uri": "file:///registry/v1"},
            },
        }
    }
    for i in range(3):
        objects[names.core_path("pods", NS, f"reranker-{i}")] = {
            "metadata": {"name": f"reranker-{i}", "labels": {"app": "reranker"}},
            "status": {
                "phase": "Running",
                "podIP": f"10.0.0.{i + 1}",
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }
    return FakeKube(objects)


async def test_a_settled_resource_makes_no_api_writes() -> None:
    kube = _world()
    runtime = Runtime(config=Config(), kube=kube, agents=FakeAgents("v1"), session=None)  # type: ignore[arg-type]
    loop = Reconciler(runtime, NS, NAME, logging.getLogger("test"))
    for _ in range(4):  # first sight: status, the boot ConfigMap, events; then it settles
        await loop.iterate()
    boot = kube.objects[names.core_path("configmaps", NS, f"{NAME}-boot")]
    assert json.loads(boot["data"][names.BOOT_KEY])["version"] == "v1"
    status = kube.objects[names.model_path(NS, NAME)]["status"]
    assert status["currentVersion"] == "v1"
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"
    kube.writes.clear()
    for _ in range(5):
        await loop.iterate()
    assert kube.writes == [], f"a settled resource wrote: {kube.writes}"


async def test_quality_set_from_a_configmap() -> None:
    import pytest
    from hotswap_operator.models import QualityGate
    from hotswap_operator.rollout import QualitySetError

    kube = _world()
    case = {"query": "q", "documents": ["a", "b"], "relevance": [0, 1]}
    kube.objects[names.core_path("configmaps", NS, "golden")] = {"data": {"set.json": json.dumps([case])}}
    kube.objects[names.core_path("configmaps", NS, "bad")] = {"data": {"set.json": '[{"query": "q"}]'}}
    runtime = Runtime(config=Config(), kube=kube, agents=FakeAgents("v1"), session=None)  # type: ignore[arg-type]
    loop = Reconciler(runtime, NS, NAME, logging.getLogger("test"))
    gate = QualityGate.model_validate({"configMapRef": {"name": "golden", "key": "set.json"}})
    assert await loop.quality_set(gate) == [{**case, "relevance": [0.0, 1.0]}]
    for name, key, match in (
        ("missing", "set.json", "not found"),
        ("golden", "x", "no key"),
        ("bad", "set.json", "not a list"),
    ):
        ref = QualityGate.model_validate({"configMapRef": {"name": name, "key": key}})
        with pytest.raises(QualitySetError, match=match):
            await loop.quality_set(ref)
