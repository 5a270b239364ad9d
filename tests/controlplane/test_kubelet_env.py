"""The process kubelet's remapping of a container spec (no control plane needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtools.controlplane.kubelet_env import (
    ConfigError,
    Rewriter,
    container_env,
    expand,
    image_name,
    resolve_argv,
)

POD = {
    "metadata": {"name": "web-1", "namespace": "prod", "uid": "u-1", "labels": {"app": "web"}},
    "spec": {"nodeName": "n1", "serviceAccountName": "sa"},
    "status": {"podIP": "198.18.0.7", "hostIP": "198.18.0.1"},
}


def test_expand_follows_kubernetes_rules() -> None:
    env = {"A": "1", "B": "two"}
    assert expand("$(A)-$(B)", env) == "1-two"
    assert expand("$(MISSING)", env) == "$(MISSING)"
    assert expand("$$(A)", env) == "$(A)"


def test_rewriter_maps_mount_paths_and_pod_local_addresses(tmp_path: Path) -> None:
    tmp = tmp_path / "vol-tmp"
    token = tmp_path / "vol-token"
    rw = Rewriter({"/tmp": tmp, "/etc/hotswap/agent-token": token}, "198.18.0.7")
    assert rw("--token-file=/etc/hotswap/agent-token/token") == f"--token-file={token}/token"
    assert rw("/tmp") == str(tmp)
    assert rw('path = "/tmp/x"') == f'path = "{tmp}/x"'
    # Whole path components only; an already rewritten host path is not rewritten again.
    assert rw("/tmpfoo /var/tmp") == "/tmpfoo /var/tmp"
    assert rw("--host=0.0.0.0") == "--host=198.18.0.7"
    assert rw("http://127.0.0.1:8081/admin") == "http://198.18.0.7:8081/admin"
    assert rw("localhost:9090") == "198.18.0.7:9090"
    assert rw("127.0.0.10 localhost.localdomain") == "127.0.0.10 localhost.localdomain"


def test_container_env_order_value_from_and_expansion() -> None:
    container = {
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {"name": "URL", "value": "http://$(POD_IP):8080/$(POD_NAME)"},
            {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
            {
                "name": "OPT",
                "valueFrom": {"configMapKeyRef": {"name": "c", "key": "missing", "optional": True}},
            },
        ],
        "envFrom": [{"configMapRef": {"name": "c"}, "prefix": "C_"}],
    }
    data = {("secret", "s"): {"k": "v"}, ("configmap", "c"): {"x": "1"}}

    def lookup(kind: str, name: str, key: str | None, optional: bool) -> object:
        obj = data[(kind, name)]
        return obj if key is None else obj.get(key)

    env = container_env(
        POD,
        container,
        base={"BASE": "b"},
        lookup=lookup,
        rewrite=Rewriter({}, "198.18.0.7"),
        node_capacity={},
    )
    assert env["POD_NAME"] == "web-1" and env["APP"] == "web" and env["BASE"] == "b"
    assert env["URL"] == "http://198.18.0.7:8080/web-1"
    assert env["SECRET"] == "v" and env["C_x"] == "1" and "OPT" not in env


def test_resolve_argv_uses_search_path_commands_and_image_entrypoints(tmp_path: Path) -> None:
    tool = tmp_path / "hotswap-server"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    rw = Rewriter({}, "198.18.0.7")
    argv = resolve_argv(
        {"command": ["hotswap-server"], "args": ["--host=0.0.0.0"]},
        {},
        rw,
        images={},
        commands={},
        search_path=[tmp_path],
    )
    assert argv == [str(tool), "--host=198.18.0.7"]
    argv = resolve_argv(
        {"image": "ghcr.io/x/hotswap:1.0", "args": ["serve"]},
        {},
        rw,
        images={"hotswap": ["/bin/echo"]},
        commands={},
        search_path=[],
    )
    assert argv == ["/bin/echo", "serve"]
    assert resolve_argv(
        {"command": ["x"]}, {}, rw, images={}, commands={"x": ["/bin/true", "-"]}, search_path=[]
    ) == [
        "/bin/true",
        "-",
    ]
    with pytest.raises(ConfigError):
        resolve_argv({"image": "unknown:1"}, {}, rw, images={}, commands={}, search_path=[])
    assert image_name("reg:5000/a/b:tag@sha256:ab") == "reg:5000/a/b"
