"""Pod addresses without containers or network namespaces.

A pod has two addresses here, as it has two in a cluster:

* its **local address**, 127.M.0.K: what ``127.0.0.1``, ``localhost`` and ``0.0.0.0`` in its spec
  become, and what it sees as its own IP (``fieldRef: status.podIP`` in its env). It is a loopback
  address, like the pod's own loopback in its network namespace, so a server that insists on
  binding its admin plane to loopback (hotswap-server does) is satisfied, and every pod can bind
  the same ports.
* its **pod IP**, what the API server holds in ``status.podIP`` and EndpointSlices list. Kubernetes
  refuses loopback addresses there (``ValidateEndpointIP``), so when the harness may change the
  host's network (root or CAP_NET_ADMIN, and the ``nft`` tool from Debian's ``nftables``), pod
  IPs come from a /24 of 198.18.0.0/15 (RFC 2544: reserved for benchmarking, never routed on the
  internet): one ``local`` route makes the whole /24 this host's (like the kernel's own
  ``local 127.0.0.0/8`` route), and one nftables NAT map sends 198.18.N.K to 127.M.0.K, so whoever
  connects to a pod IP reaches what the pod bound on its local address. That is what a pod
  network does: the pod IP reaches the pod.

The route and the NAT are made **only inside a network namespace the run created**
(``scripts/netns-run.sh CMD``: ``unshare --net``, ``lo`` up, then CMD): this workplace allows test
traffic to loopback addresses and to addresses inside such namespaces, never to any other address
in the machine's own (root) namespace, even one a local route keeps on the machine. So
:func:`in_run_netns` must hold (``/proc/self/ns/net`` is the namespace the wrapper made and
announced in ``HOTSWAP_NETNS``, not the one it started from, nor pid 1's); anywhere else the
harness refuses to touch routes or NAT, says why, and falls back to ``loopback``.

Without that (mode ``loopback``), pod IP = local address = 127.M.0.K: everything runs, but the API
server refuses those addresses in EndpointSlices, so Services list no endpoints.

Ranges are chosen with a lock file each (concurrent harnesses never share one); the route and the
NAT table are removed on close, or by the watchdog (procs.WATCHDOG) if the harness is killed.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from devtools.controlplane.procs import WATCHDOG

log = logging.getLogger(__name__)

_LOCK_DIR = Path(tempfile.gettempdir()) / "hotswap-controlplane-net"


class NetworkError(RuntimeError):
    pass


@dataclass(frozen=True)
class PodAddress:
    ip: str  # the pod IP, as the API server and every client see it
    local: str  # the pod's own (loopback) address: what the pod binds and calls itself


@dataclass
class PodNetwork:
    """Addresses .2 to .254 of a /24 handed to pods; .1 is the node's."""

    local_prefix: str  # "127.M.0."
    routed_prefix: str | None = None  # "198.18.N." when routed, else None
    _locks: list[IO[bytes]] = field(default_factory=list)
    _free: list[int] = field(default_factory=lambda: list(range(2, 255)))
    _undo: list[list[str]] = field(default_factory=list)

    @property
    def routed(self) -> bool:
        return self.routed_prefix is not None

    @property
    def node_ip(self) -> str:
        return (self.routed_prefix or self.local_prefix) + "1"

    def allocate(self) -> PodAddress:
        if not self._free:
            raise NetworkError("no free pod address left (253 pods)")
        last = self._free.pop(0)
        local = self.local_prefix + str(last)
        return PodAddress(ip=(self.routed_prefix + str(last)) if self.routed_prefix else local, local=local)

    def release(self, addr: PodAddress) -> None:
        last = int(addr.local.rsplit(".", 1)[1])
        if last not in self._free:
            self._free.append(last)  # at the end: an address is reused as late as possible

    def close(self) -> None:
        for argv in reversed(self._undo):
            subprocess.run(argv, capture_output=True, check=False)
            WATCHDOG.forget_command(argv)
        self._undo.clear()
        for lock in self._locks:
            lock.close()
        self._locks.clear()


def _try_lock(name: str) -> IO[bytes] | None:
    _LOCK_DIR.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(PermissionError):
        os.chmod(_LOCK_DIR, 0o1777)
    handle = open(_LOCK_DIR / f"{name}.lock", "ab")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def _run(argv: list[str], stdin: str | None = None) -> str | None:
    """None on success, else the error text."""
    res = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    return None if res.returncode == 0 else (res.stderr.strip() or f"{argv[0]}: exit {res.returncode}")


def _local_range() -> tuple[str, IO[bytes]]:
    for m in range(64, 250):
        lock = _try_lock(f"127.{m}")
        if lock is not None:
            return f"127.{m}.0.", lock
    raise NetworkError("no free 127.M.0.0/24 range for pod addresses")


def _route_taken(cidr: str) -> bool:
    out = subprocess.run(
        ["ip", "-4", "route", "show", "table", "local", cidr], capture_output=True, text=True, check=False
    )
    return bool(out.stdout.strip())


def _netns_inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:  # pid 1's is unreadable in some containers, even for root
        return None


def in_run_netns() -> str | None:
    """None when this process is inside the network namespace scripts/netns-run.sh created, else why not.

    The wrapper announces the new namespace's inode in ``HOTSWAP_NETNS`` and the one it started
    from in ``HOTSWAP_NETNS_PARENT``; ours must be the former, differ from the latter, and differ
    from pid 1's (the machine's root namespace) wherever that can be read.
    """
    own = _netns_inode("/proc/self/ns/net")
    if own is None:
        return "cannot read /proc/self/ns/net"
    announced = os.environ.get("HOTSWAP_NETNS", "")
    if announced != str(own):
        return (
            "not inside a network namespace made for this run (run it under scripts/netns-run.sh): "
            "routes and NAT for pod IPs are never added to the machine's own namespace"
        )
    if os.environ.get("HOTSWAP_NETNS_PARENT", "") == str(own):
        return "HOTSWAP_NETNS names the namespace netns-run.sh started from, not a new one"
    root = _netns_inode("/proc/1/ns/net")
    if root is not None and root == own:
        return "this is pid 1's network namespace (the machine's own), not one made for this run"
    return None


def _routed(net: PodNetwork) -> str | None:
    """Make ``net`` routed; None on success, else why not."""
    why = in_run_netns()
    if why is not None:
        return why
    if shutil.which("ip") is None:
        return "no `ip` command"
    nft = shutil.which("nft")
    if nft is None:
        return "no `nft` command (Debian package nftables)"
    for sub in ipaddress.ip_network("198.18.0.0/15").subnets(new_prefix=24):
        cidr = str(sub)
        lock = _try_lock(cidr.replace("/", "_"))
        if lock is None:
            continue
        if _route_taken(cidr):  # not ours: leave it alone
            lock.close()
            continue
        route = ["ip", "route", "add", "local", cidr, "dev", "lo", "table", "local"]
        error = _run(route)
        if error is not None:
            lock.close()
            return f"{' '.join(route)}: {error}"
        net._locks.append(lock)
        undo_route = ["ip", "route", "del", "local", cidr, "dev", "lo", "table", "local"]
        WATCHDOG.on_exit(undo_route)
        net._undo.append(undo_route)
        prefix = cidr.rsplit(".", 1)[0] + "."
        table = "hotswap_" + prefix.rstrip(".").replace(".", "_")
        # A static map of the whole /24: no per-pod rule to add or forget.
        elements = ", ".join(f"{prefix}{k} : {net.local_prefix}{k}" for k in range(1, 255))
        ruleset = (
            f"table ip {table} {{\n"
            f"  map pods {{ type ipv4_addr : ipv4_addr; elements = {{ {elements} }} }}\n"
            "  chain out { type nat hook output priority -100; policy accept; "
            "dnat ip to ip daddr map @pods; }\n"
            "}\n"
        )
        undo_table = [nft, "delete", "table", "ip", table]
        _run(undo_table)  # a leftover of a killed harness whose watchdog was killed too
        error = _run([nft, "-f", "-"], stdin=ruleset)
        if error is not None:
            return f"nft (NAT from pod IPs to local addresses): {error}"
        WATCHDOG.on_exit(undo_table)
        net._undo.append(undo_table)
        net.routed_prefix = prefix
        return None
    return "no free 198.18.0.0/15 /24"


def allocate(mode: str = "auto") -> PodNetwork:
    """A pod network: ``routed`` (needs a network namespace of the run's own, CAP_NET_ADMIN
    and nft), ``loopback``, or ``auto`` (routed where allowed and possible, else loopback)."""
    if mode not in ("auto", "routed", "loopback"):
        raise ValueError(f"pod network mode must be auto, routed or loopback, not {mode!r}")
    local_prefix, lock = _local_range()
    net = PodNetwork(local_prefix=local_prefix, _locks=[lock])
    if mode == "loopback":
        return net
    why = _routed(net)
    if why is None:
        return net
    if mode == "routed":
        net.close()
        raise NetworkError(f"cannot route pod IPs: {why}")
    if net._undo:
        # Half done (the route, not the NAT): undo it, as the pod IPs would lead nowhere.
        for argv in reversed(net._undo):
            _run(argv)
            WATCHDOG.forget_command(argv)
        net._undo.clear()
    log.warning(
        "pod network: %s; pod IPs are loopback addresses, which the API server refuses in EndpointSlices",
        why,
    )
    return net
