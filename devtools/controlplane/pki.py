"""Certificates and keys for one throw-away control plane.

One CA signs everything: the API server's serving certificate and the client certificates of the
admin, the controller manager, the scheduler and the kubelet (Kubernetes maps a client
certificate's CN to the user and its O to groups). The ServiceAccount signing key pair is separate,
as in a real cluster. ECDSA P-256 throughout: generating it is instant, where RSA would add seconds
to every start, and the API server accepts it for serving, client auth and ES256 token signing.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# ClusterIP of the `kubernetes` Service: the first address of --service-cluster-ip-range.
SERVICE_CIDR = "10.0.0.0/24"
KUBERNETES_SERVICE_IP = "10.0.0.1"
_VALIDITY = dt.timedelta(days=7)


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path

    def pem(self) -> tuple[bytes, bytes]:
        return self.cert.read_bytes(), self.key.read_bytes()


@dataclass(frozen=True)
class Pki:
    ca: CertPair
    serving: CertPair
    admin: CertPair
    controller_manager: CertPair
    scheduler: CertPair
    sa_key: Path  # ServiceAccount token signing key (private)
    sa_pub: Path  # its public half, for the API server to verify tokens

    def kubelet(self, node: str) -> CertPair:
        """The client certificate of node ``node`` (user system:node:<node>, group system:nodes)."""
        name = f"kubelet-{node}"
        pair = CertPair(self.ca.cert.parent / f"{name}.crt", self.ca.cert.parent / f"{name}.key")
        if not pair.cert.exists():
            _issue(self.ca, pair, cn=f"system:node:{node}", orgs=["system:nodes"], client=True)
        return pair


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)


def _name(cn: str, orgs: list[str] | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs or []]
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(
    ca: CertPair,
    pair: CertPair,
    *,
    cn: str,
    orgs: list[str] | None = None,
    client: bool = False,
    sans: list[x509.GeneralName] | None = None,
) -> None:
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    ca_key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn, orgs))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # tolerate a little clock skew
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=False,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write_key(pair.key, key)
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _make_ca(pair: CertPair) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    name = _name("hotswap-controlplane-ca")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=False,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_key(pair.key, key)
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def create(folder: Path) -> Pki:
    """Generate a fresh CA, certificates and ServiceAccount keys in ``folder`` (created)."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)

    def pair(name: str) -> CertPair:
        return CertPair(folder / f"{name}.crt", folder / f"{name}.key")

    ca = pair("ca")
    _make_ca(ca)
    serving = pair("apiserver")
    # Every name a client may use for the API server: loopback, and the in-cluster names and
    # ClusterIP of the `kubernetes` Service (the kubelet points pods at 127.0.0.1, but a client
    # that verifies against the in-cluster name must succeed too).
    sans: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address(KUBERNETES_SERVICE_IP)),
        *(
            x509.DNSName(n)
            for n in (
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            )
        ),
    ]
    _issue(ca, serving, cn="kube-apiserver", sans=sans)
    admin = pair("admin")
    _issue(ca, admin, cn="hotswap-admin", orgs=["system:masters"], client=True)
    kcm = pair("controller-manager")
    _issue(ca, kcm, cn="system:kube-controller-manager", client=True)
    sched = pair("scheduler")
    _issue(ca, sched, cn="system:kube-scheduler", client=True)

    sa_key = ec.generate_private_key(ec.SECP256R1())
    sa_key_path, sa_pub_path = folder / "sa.key", folder / "sa.pub"
    _write_key(sa_key_path, sa_key)
    sa_pub_path.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return Pki(
        ca=ca,
        serving=serving,
        admin=admin,
        controller_manager=kcm,
        scheduler=sched,
        sa_key=sa_key_path,
        sa_pub=sa_pub_path,
    )
