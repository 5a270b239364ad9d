"""Pod addresses without containers: one local address per pod, taken from a range this host owns.

Kubernetes refuses loopback addresses (127.0.0.0/8) in EndpointSlices and Endpoints
(``ValidateEndpointIP``), so pods on 127.x addresses would run but no Service would ever list
them. When the harness may change routes (root or CAP_NET_ADMIN), it adds one *local* route for
a /24 of 198.18.0.0/15 (RFC 2544: reserved for benchmarking, never routed on the internet) to
the loopback device, exactly as the kernel's own ``local 127.0.0.0/8 dev lo`` route: every address
of the /24 is then this host's, bindable and reachable, with no per-pod configuration. Otherwise
it falls back to 127.x addresses and says that EndpointSlices will be refused.

The /24 is chosen with a lock file per range (concurrent harnesses never share one) and the route
is removed on stop, or by the watchdog (procs.WATCHDOG) if the harness is killed.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import logging
import os
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


@dataclass
class PodNetwork:
    """A /24 of pod addresses: ``.1`` is the node, ``.2``..``.254`` are handed to pods."""

    prefix: str  # e.g. "198.18.7." or "127.77.7."
    routed: bool  # True: a local route of 198.18.x.0/24 (EndpointSlices work); False: loopback
    _lock: IO[bytes] | None = None
    _free: list[int] = field(default_factory=lambda: list(range(2, 255)))
    _route: list[str] | None = None

    @property
    def node_ip(self) -> str:
        return self.prefix + "1"

    @property
    def cidr(self) -> str:
        return self.prefix + "0/24"

    def allocate(self) -> str:
        if not self._free:
            raise NetworkError(f"no free pod address left in {self.cidr}")
        return self.prefix + str(self._free.pop(0))

    def release(self, ip: str) -> None:
        if ip.startswith(self.prefix):
            last = int(ip.rsplit(".", 1)[1])
            if last not in self._free:
                self._free.append(last)  # at the end: an address is reused as late as possible

    def close(self) -> None:
        if self._route is not None:
            subprocess.run(["ip", "route", "del", *self._route], capture_output=True, check=False)
            WATCHDOG.forget_command(["ip", "route", "del", *self._route])
            self._route = None
        if self._lock is not None:
            self._lock.close()
            self._lock = None


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


def _route_exists(cidr: str) -> bool:
    out = subprocess.run(
        ["ip", "-4", "route", "show", "table", "local", cidr], capture_output=True, text=True, check=False
    )
    return bool(out.stdout.strip())


def allocate(mode: str = "auto") -> PodNetwork:
    """A pod network: ``routed`` (198.18.x.0/24; needs CAP_NET_ADMIN), ``loopback``, or ``auto``."""
    if mode not in ("auto", "routed", "loopback"):
        raise ValueError(f"pod network mode must be auto, routed or loopback, not {mode!r}")
    if mode in ("auto", "routed"):
        net = ipaddress.ip_network("198.18.0.0/15")
        errors = []
        for sub in net.subnets(new_prefix=24):
            cidr = str(sub)
            lock = _try_lock(cidr.replace("/", "_"))
            if lock is None:
                continue
            if _route_exists(cidr):  # someone else's (a harness from before the locks, or not ours)
                lock.close()
                continue
            route = ["local", cidr, "dev", "lo", "table", "local"]
            res = subprocess.run(["ip", "route", "add", *route], capture_output=True, text=True, check=False)
            if res.returncode == 0:
                WATCHDOG.on_exit(["ip", "route", "del", *route])
                prefix = cidr.rsplit(".", 1)[0] + "."
                return PodNetwork(prefix=prefix, routed=True, _lock=lock, _route=route)
            lock.close()
            errors.append(res.stderr.strip() or f"exit {res.returncode}")
            break  # the same refusal (no privilege) would repeat for every range
        if mode == "routed":
            raise NetworkError(f"cannot add a local route for pod addresses: {'; '.join(errors)}")
        log.warning(
            "pod network: no privilege to add a local route (%s); using 127.x addresses, "
            "so EndpointSlices will be refused by the API server",
            "; ".join(errors) or "no free range",
        )
    for n in range(64, 250):
        lock = _try_lock(f"127.{n}")
        if lock is not None:
            return PodNetwork(prefix=f"127.{n}.0.", routed=False, _lock=lock)
    raise NetworkError("no free 127.N.0.0/24 range for pod addresses")
