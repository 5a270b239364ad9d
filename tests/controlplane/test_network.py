"""The pod network's rule: routes and NAT for pod IPs only inside a network namespace of the run's own.

No control plane needed: these run everywhere (in `make test-controlplane` inside the namespace).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from devtools.controlplane import network

REPO = Path(__file__).resolve().parents[2]


def test_outside_the_runs_namespace_pod_ips_are_loopback_and_nothing_is_routed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HOTSWAP_NETNS", raising=False)
    assert "netns-run.sh" in (network.in_run_netns() or "")
    net = network.allocate("auto")
    try:
        assert not net.routed and not net._undo
        addr = net.allocate()
        assert addr.ip == addr.local and addr.ip.startswith("127.")
    finally:
        net.close()
    with pytest.raises(network.NetworkError, match=r"netns-run\.sh"):
        network.allocate("routed")


def test_a_namespace_announced_but_not_ours_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    own = str(os.stat("/proc/self/ns/net").st_ino)
    monkeypatch.setenv("HOTSWAP_NETNS", own)
    monkeypatch.setenv("HOTSWAP_NETNS_PARENT", own)  # what a copied environment would say
    assert network.in_run_netns() is not None


def test_netns_run_gives_a_fresh_namespace_with_lo_up() -> None:
    if os.geteuid() != 0:
        pytest.skip("unshare --net needs root")
    out = subprocess.run(
        [
            str(REPO / "scripts/netns-run.sh"),
            "python3",
            "-c",
            "import os, subprocess;"
            "print(os.environ['HOTSWAP_NETNS'], os.stat('/proc/self/ns/net').st_ino);"
            "print(subprocess.run(['ip', '-br', 'link'], capture_output=True, text=True).stdout)",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout.splitlines()
    announced, inode = out[0].split()
    assert announced == inode != str(os.stat("/proc/self/ns/net").st_ino)
    links = [line.split()[0] for line in out[1:] if line.strip()]
    assert links == ["lo"]
    assert "UP" in out[1] or "UNKNOWN" in out[1]
