"""hotswap-operator with kopf peering: a distinct, stable priority per pod; the peering objects."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from hotswap_operator import cli, peering
from hotswap_operator.config import Config, ConfigError
from hotswap_operator.kube import KubeError


def test_priority_is_stable_distinct_and_positive() -> None:
    a = peering.derive_priority("rr-hotswap-operator-7d9f8c-abcde")
    assert a == peering.derive_priority("rr-hotswap-operator-7d9f8c-abcde")  # a restart keeps it
    names = [f"rr-hotswap-operator-7d9f8c-{i:05d}" for i in range(2000)]
    priorities = {peering.derive_priority(n) for n in names}
    assert len(priorities) == len(names)  # equal priorities would pause every replica
    assert all(1 <= p < 2**31 for p in priorities)


def test_kopf_args_add_the_pod_priority_only_when_peering() -> None:
    env = {"POD_NAME": "op-1"}
    want = f"--priority={peering.derive_priority('op-1')}"
    assert cli.kopf_args(["--peering=ops", "--namespace=ml"], env) == [
        "run", "-m", cli.HANDLERS, "--peering=ops", "--namespace=ml", want,
    ]  # fmt: skip
    assert cli.kopf_args(["-P", "ops"], env)[-1] == want
    assert cli.kopf_args(["--standalone", "--namespace=ml"], env) == [
        "run", "-m", cli.HANDLERS, "--standalone", "--namespace=ml",
    ]  # fmt: skip
    assert cli.kopf_args(["--peering=ops", "--priority=7"], env)[-1] == "--priority=7"  # kept as given
    # POD_ID (kopf's identity) when POD_NAME is not set; the two name the same pod in the chart.
    assert cli.kopf_args(["--peering=ops"], {"POD_ID": "op-1"})[-1] == want
    assert cli.kopf_args(["--peering=ops"], {"POD_NAME": "op-2"})[-1] != want


def test_parse_watch() -> None:
    w = peering.parse_watch(["--peering=ops", "--namespace=a", "-n", "b", "--ns=c", "-p", "5"], {})
    assert w == peering.Watch(peering="ops", priority=5, clusterwide=False, namespaces=("a", "b", "c"))
    assert peering.parse_watch(["-A", "--peering", "x"], {}).clusterwide
    assert peering.parse_watch(["--standalone"], {"KOPF_RUN_PEERING": "x"}).peering is None
    assert peering.parse_watch(["-A"], {"KOPF_RUN_PEERING": "x"}).peering == "x"


def test_peering_objects() -> None:
    assert peering.peering_objects(peering.Watch()) == []
    ns = peering.peering_objects(peering.Watch(peering="ops", namespaces=("a", "b")))
    assert [(path, body["kind"], body["metadata"]["namespace"]) for path, body in ns] == [
        ("/apis/kopf.dev/v1/namespaces/a/kopfpeerings", "KopfPeering", "a"),
        ("/apis/kopf.dev/v1/namespaces/b/kopfpeerings", "KopfPeering", "b"),
    ]
    ((path, body),) = peering.peering_objects(peering.Watch(peering="ops", clusterwide=True))
    assert path == "/apis/kopf.dev/v1/clusterkopfpeerings" and body["kind"] == "ClusterKopfPeering"
    assert body["metadata"]["name"] == "ops" and "namespace" not in body["metadata"]


class FakeKube:
    def __init__(self, existing: set[str], conflict: bool = False) -> None:
        self.existing = existing
        self.conflict = conflict
        self.created: list[str] = []

    async def get(self, path: str) -> dict[str, Any] | None:
        return {} if path in self.existing else None

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.conflict:
            raise KubeError(409, "AlreadyExists", "another replica was first")
        self.created.append(f"{path}/{body['metadata']['name']}")
        return body


def test_ensure_objects_creates_missing_and_tolerates_a_race() -> None:
    watch = peering.Watch(peering="ops", namespaces=("a", "b"))
    kube = FakeKube({"/apis/kopf.dev/v1/namespaces/a/kopfpeerings/ops"})
    asyncio.run(peering.ensure_objects(kube, watch, logging.getLogger("t")))  # type: ignore[arg-type]
    assert kube.created == ["/apis/kopf.dev/v1/namespaces/b/kopfpeerings/ops"]
    racing = FakeKube(set(), conflict=True)
    asyncio.run(peering.ensure_objects(racing, watch, logging.getLogger("t")))  # type: ignore[arg-type]


def test_peering_lifetime_setting() -> None:
    assert Config.from_env({}).peering_lifetime == 60
    assert Config.from_env({"HOTSWAP_OPERATOR_PEERING_LIFETIME_SECONDS": "10"}).peering_lifetime == 10
    with pytest.raises(ConfigError, match="PEERING_LIFETIME_SECONDS"):
        Config.from_env({"HOTSWAP_OPERATOR_PEERING_LIFETIME_SECONDS": "1"})
