"""A real Kubernetes control plane for tests: etcd, kube-apiserver, kube-controller-manager and
kube-scheduler built from Go modules (scripts/get-controlplane.sh), plus a process kubelet.

    from devtools.controlplane import ControlPlane

    async with ControlPlane.start(tmp_path) as cp:
        ...  # cp.kubeconfig, cp.url, cp.client(), cp.kubelet, await cp.restart_apiserver()

``python -m devtools.controlplane up`` keeps one running until Ctrl-C. See docs/controlplane.md.
"""

from devtools.controlplane.binaries import NotBuilt, bin_dir
from devtools.controlplane.client import ApiError, Client
from devtools.controlplane.cluster import ControlPlane, ControlPlaneError
from devtools.controlplane.kubelet import Kubelet, KubeletConfig

__all__ = [
    "ApiError",
    "Client",
    "ControlPlane",
    "ControlPlaneError",
    "Kubelet",
    "KubeletConfig",
    "NotBuilt",
    "bin_dir",
]
