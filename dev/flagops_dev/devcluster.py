"""A real Kubernetes control plane on loopback, for the demo, the e2e tests and `make cluster`.

etcd, kube-apiserver (client-certificate admin, RBAC, default admission plugins),
kube-controller-manager and kube-scheduler are the real components, built from their Go
modules by hack/controlplane/build.sh; kwok stands in for kubelets, so nodes turn Ready
and pods Running without containers. Everything binds to 127.0.0.1 on free ports.

Two ways to own the processes:
- `ControlPlane.start(bound_to_caller=True)`: the components die with the calling
  process (PR_SET_PDEATHSIG), so a test run killed with SIGKILL leaves nothing behind;
- `python -m flagops_dev.devcluster up|down|status`: a detached cluster whose pids and ports
  live in `<workdir>/state.json`, so `up` is idempotent and `down` stops it from anywhere.

This module is development tooling: the operator never imports it.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from kubernetes import client, config

if TYPE_CHECKING:
    from flagops_dev.realnode import RealNode

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "hack" / "controlplane" / "build.sh"
KWOK_STAGES = REPO_ROOT / "hack" / "controlplane" / "kwok" / "stages.yaml"
DEFAULT_WORKDIR = REPO_ROOT / ".cluster"

# Stop order: dependents first, etcd last.
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
NODE_NAMES = ("kwok-node-0", "kwok-node-1")
# The real node's own taint (realnode.py): only pods meant for real containers land there.
REAL_NODE_TAINT = "flagops.dev/real-node"
SERVICE_CIDR = "10.96.0.0/16"


class ControlPlaneError(RuntimeError):
    """A component failed to build, start or become ready; the message names its log."""


@dataclass
class State:
    """What `down` and `status` need to find a running cluster again."""

    workdir: str
    kubeconfig: str
    ports: dict[str, int]
    pids: dict[str, int] = field(default_factory=dict)
    started_at: float = 0.0

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"


def build_binaries(*, quiet: bool = False) -> dict[str, Path]:
    """Build (or reuse from the cache) every component; returns name -> binary path."""
    if not shutil.which("go"):
        raise ControlPlaneError("Go is not on PATH: the control plane is built from Go modules")
    stderr = subprocess.DEVNULL if quiet else None
    out = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--print-paths"],
        check=False,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
    )
    if out.returncode != 0:
        raise ControlPlaneError(f"{BUILD_SCRIPT} failed with exit code {out.returncode}")
    paths = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    return {name: Path(path) for name, path in paths.items()}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); it is gone for our purposes.
    with contextlib.suppress(OSError):
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            return False
    return True


def die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL it when the process that started it dies."""
    pr_set_pdeathsig = 1
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)


def spawn(
    argv: list[str], log: Path, *, cwd: Path, bound_to_caller: bool, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a component in its own process group, output appended to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent if bound_to_caller else None,  # noqa: PLW1509
            cwd=cwd,
            env=env,
        )


def wait_for(what: str, probe: Callable[[], bool], *, deadline: float, log: Path | None = None) -> None:
    """Poll `probe` until it is true; past the deadline, fail with the log's last lines."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        with contextlib.suppress(Exception):
            if probe():
                return
        time.sleep(0.2)
    raise ControlPlaneError(f"{what} not ready within {deadline:.0f}s{log_tail(log)}")


def wait_process_ready(
    name: str, proc: subprocess.Popen[bytes], log: Path, probe: Callable[[], bool], deadline: float
) -> None:
    """Wait until `probe` holds; fail at once, with its log, if the process exits."""

    def alive_and_ready() -> bool:
        if proc.poll() is not None:
            raise ControlPlaneError(f"{name} exited with code {proc.returncode}{log_tail(log)}")
        return probe()

    wait_for(name, alive_and_ready, deadline=deadline, log=log)


def log_tail(log: Path | None, lines: int = 15) -> str:
    if log is None or not log.exists():
        return ""
    tail = log.read_text(errors="replace").splitlines()[-lines:]
    return f"; see {log}:\n" + "\n".join(f"    {line}" for line in tail)


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


class Pki:
    """One CA; the admin client certificate doubles as the serving certificate (as kwokctl does).
    The CA's key stays beside it so the real node's kubelet gets certificates of its own."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.ca_crt = directory / "ca.crt"
        self.ca_key = directory / "ca.key"
        self.admin_crt = directory / "admin.crt"
        self.admin_key = directory / "admin.key"
        self.sa_key = directory / "sa.key"
        self.sa_pub = directory / "sa.pub"

    def ensure(self) -> None:
        if all(p.exists() for p in (self.ca_crt, self.ca_key, self.admin_crt, self.admin_key, self.sa_key)):
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        now = datetime.datetime.now(datetime.UTC)
        ca_key = _new_key()
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flagops-dev-ca")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(ca_key, hashes.SHA256())
        )
        self.ca_crt.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        self.ca_key.write_bytes(_pem_key(ca_key))
        self.ca_key.chmod(0o600)
        self.issue(
            self.admin_crt,
            self.admin_key,
            common_name="flagops-admin",
            organizations=("system:masters",),
            dns_names=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            ips=("127.0.0.1", "::1", "10.96.0.1"),
        )
        sa_key = _new_key()
        self.sa_key.write_bytes(_pem_key(sa_key))
        self.sa_key.chmod(0o600)
        self.sa_pub.write_bytes(
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def issue(
        self,
        crt: Path,
        key_path: Path,
        *,
        common_name: str,
        organizations: tuple[str, ...] = (),
        dns_names: tuple[str, ...] = (),
        ips: tuple[str, ...] = (),
    ) -> None:
        """A certificate signed by the CA, for client and server use, valid for a year."""
        ca = x509.load_pem_x509_certificate(self.ca_crt.read_bytes())
        ca_key = serialization.load_pem_private_key(self.ca_key.read_bytes(), password=None)
        assert isinstance(ca_key, rsa.RSAPrivateKey)
        key = _new_key()
        subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
        subject.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(subject))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
        )
        sans: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
        sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        crt.write_bytes(builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(_pem_key(key))
        key_path.chmod(0o600)


def kubeconfig_yaml(server: str, ca_pem: bytes, user: dict[str, str], *, name: str) -> str:
    """A self-contained kubeconfig (JSON is valid YAML, and needs no YAML library)."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "flagops-dev",
                "cluster": {
                    "server": server,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode(),
                },
            }
        ],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": {"cluster": "flagops-dev", "user": name}}],
        "current-context": name,
    }
    return json.dumps(config, indent=2) + "\n"


class ControlPlane:
    def __init__(self, workdir: Path = DEFAULT_WORKDIR) -> None:
        self.workdir = workdir.resolve()
        self.pki = Pki(self.workdir / "pki")
        self.logs = self.workdir / "logs"
        self.kubeconfig = self.workdir / "kubeconfig"
        self.state_file = self.workdir / "state.json"
        self.state: State | None = None
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._binaries: dict[str, Path] = {}
        self._bound_to_caller = True

    def pids(self) -> dict[str, int]:
        """Each running component's process id (kube-apiserver, etcd, ...), for measurements."""
        return {name: proc.pid for name, proc in self._procs.items() if proc.poll() is None}

    # -- lifecycle ---------------------------------------------------------------------

    def start(
        self,
        *,
        bound_to_caller: bool,
        binaries: dict[str, Path] | None = None,
        deadline: float = 60.0,
        real_node: bool = False,
    ) -> State:
        """Start every component and wait until nodes are Ready; cleans up on failure.
        With `real_node`, a kubelet + containerd node joins the kwok ones (realnode.py)."""
        binaries = binaries or build_binaries()
        self._binaries, self._bound_to_caller = binaries, bound_to_caller
        if self.state_file.exists():
            self.stop()
        # Every start is a fresh cluster: stale etcd data would leak objects between runs.
        for stale in ("etcd", "logs", "kubeconfig"):
            path = self.workdir / stale
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        self.logs.mkdir(parents=True)
        self.pki.ensure()
        ports = {
            name: free_port()
            for name in ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler", "kwok")
        }
        self.state = State(
            workdir=str(self.workdir),
            kubeconfig=str(self.kubeconfig),
            ports=ports,
            started_at=time.time(),
        )
        self.kubeconfig.write_text(
            kubeconfig_yaml(
                self.state.server,
                self.pki.ca_crt.read_bytes(),
                {
                    "client-certificate-data": base64.b64encode(self.pki.admin_crt.read_bytes()).decode(),
                    "client-key-data": base64.b64encode(self.pki.admin_key.read_bytes()).decode(),
                },
                name="flagops-admin",
            )
        )
        started = time.monotonic()
        try:
            for name in COMPONENTS:
                self.launch(name, binaries[name], self._args(name, ports), bound_to_caller)
                self._wait_ready(name, deadline)
            for node in NODE_NAMES:
                self._create_node(node)
            wait_for(
                "fake nodes",
                lambda: all(self.node_ready(n) for n in NODE_NAMES),
                deadline=deadline,
                log=self.logs / "kwok.log",
            )
            wait_for(
                "default ServiceAccount (kube-controller-manager)",
                lambda: self._get("/api/v1/namespaces/default/serviceaccounts/default") is not None,
                deadline=deadline,
                log=self.logs / "kube-controller-manager.log",
            )
            if real_node:
                self.start_real_node()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self.state

    def real_node(self) -> RealNode:
        from flagops_dev.realnode import RealNode  # noqa: PLC0415 (realnode imports this module)

        return RealNode(self)

    def start_real_node(self) -> None:
        """Start the real node (kubelet + containerd) on this running control plane."""
        self.real_node().start(self._binaries["kubelet"], bound_to_caller=self._bound_to_caller)

    def refresh_real_node(self) -> None:
        """Give a running real node the images as the tree builds them now."""
        if "containerd" in (self.state.pids if self.state else {}):
            self.real_node().import_images()

    def restart(self, name: str, *, deadline: float = 60.0) -> None:
        """Stop one component and start it again with the same flags and ports (fault tests)."""
        assert self.state is not None, "cluster not started"
        pid = self.state.pids[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        end = time.monotonic() + 30
        while pid_alive(pid) and time.monotonic() < end:
            self._reap(name)
            time.sleep(0.05)
        bound = self._bound_to_caller
        self.launch(name, self._binaries[name], self._args(name, self.state.ports), bound)
        self._wait_ready(name, deadline)

    def stop(self, *, grace: float = 10.0) -> None:
        """Stop every component (SIGTERM, then SIGKILL) and wait until each is gone."""
        self.state = self.state or self._load_state()
        if (self.workdir / "node").is_dir():
            self.real_node().stop()
        for name in reversed(COMPONENTS):
            self.terminate(name, grace=grace)
        self._procs.clear()
        self.state = None
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()

    def terminate(self, name: str, *, grace: float = 10.0) -> None:
        """Stop one process (SIGTERM to its group, SIGKILL after `grace`) and forget it."""
        state = self.state or self._load_state()
        pid = state.pids.pop(name, None) if state else None
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        end = time.monotonic() + grace
        while pid_alive(pid) and time.monotonic() < end:
            self._reap(name)
            time.sleep(0.05)
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            while pid_alive(pid):
                self._reap(name)
                time.sleep(0.05)
        self._reap(name)
        if self.state is not None and self.state_file.exists():
            self._save_state()

    def running(self) -> State | None:
        """The recorded cluster, if all its processes live and the API server is ready."""
        state = self._load_state()
        if state is None or not set(COMPONENTS) <= set(state.pids):
            return None
        if not all(pid_alive(pid) for pid in state.pids.values()):
            return None
        self.state = state
        try:
            return state if self._healthy("/readyz") else None
        except OSError:
            return None

    # -- internals ---------------------------------------------------------------------

    def _args(self, name: str, ports: dict[str, int]) -> list[str]:
        pki, kubeconfig = self.pki, str(self.kubeconfig)
        etcd_url = f"http://127.0.0.1:{ports['etcd']}"
        common_component = [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            "--leader-elect=false",
            "--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
            f"--cert-dir={self.workdir / 'certs' / name}",
        ]
        match name:
            case "etcd":
                peer = f"http://127.0.0.1:{ports['etcd-peer']}"
                return [
                    "--name=flagops",
                    f"--data-dir={self.workdir / 'etcd'}",
                    f"--listen-client-urls={etcd_url}",
                    f"--advertise-client-urls={etcd_url}",
                    f"--listen-peer-urls={peer}",
                    f"--initial-advertise-peer-urls={peer}",
                    f"--initial-cluster=flagops={peer}",
                    # A throwaway cluster: durability buys nothing and fsync costs seconds.
                    "--unsafe-no-fsync=true",
                    "--quota-backend-bytes=8589934592",
                    "--auto-compaction-retention=1",
                    "--log-level=warn",
                ]
            case "kube-apiserver":
                return [
                    f"--etcd-servers={etcd_url}",
                    "--bind-address=127.0.0.1",
                    "--advertise-address=127.0.0.1",
                    f"--secure-port={ports['apiserver']}",
                    f"--cert-dir={self.workdir / 'certs' / name}",
                    f"--tls-cert-file={pki.admin_crt}",
                    f"--tls-private-key-file={pki.admin_key}",
                    f"--client-ca-file={pki.ca_crt}",
                    "--authorization-mode=Node,RBAC",
                    f"--service-account-key-file={pki.sa_pub}",
                    f"--service-account-signing-key-file={pki.sa_key}",
                    "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                    f"--service-cluster-ip-range={SERVICE_CIDR}",
                    # Loopback is no valid endpoint for the `kubernetes` Service; nothing
                    # in-cluster dials it here, so do not reconcile it.
                    "--endpoint-reconciler-type=none",
                    "--allow-privileged=true",
                    # The real node's kubelet: reached by its Hostname address (`localhost`,
                    # see realnode.py), its serving certificate checked against our CA.
                    "--kubelet-preferred-address-types=Hostname,InternalIP,ExternalIP",
                    f"--kubelet-certificate-authority={pki.ca_crt}",
                    f"--kubelet-client-certificate={pki.admin_crt}",
                    f"--kubelet-client-key={pki.admin_key}",
                    "--profiling=false",
                ]
            case "kube-controller-manager":
                return [
                    *common_component,
                    f"--secure-port={ports['controller-manager']}",
                    f"--root-ca-file={pki.ca_crt}",
                    f"--service-account-private-key-file={pki.sa_key}",
                    "--use-service-account-credentials=true",
                    # kwok heartbeats every 20-45 s (kwokctl uses the same grace period).
                    "--node-monitor-grace-period=3m20s",
                    f"--service-cluster-ip-range={SERVICE_CIDR}",
                ]
            case "kube-scheduler":
                return [*common_component, f"--secure-port={ports['scheduler']}"]
            case "kwok":
                return [
                    f"--kubeconfig={kubeconfig}",
                    f"--config={KWOK_STAGES}",
                    # Only its own nodes: the real node has a kubelet of its own.
                    "--manage-nodes-with-label-selector=type=kwok",
                    "--cidr=10.244.0.1/16",
                    "--node-ip=10.0.0.1",
                    f"--server-address=127.0.0.1:{ports['kwok']}",
                    f"--tls-cert-file={pki.admin_crt}",
                    f"--tls-private-key-file={pki.admin_key}",
                    "--node-lease-duration-seconds=200",
                ]
        raise ValueError(name)

    def launch(
        self,
        name: str,
        binary: Path,
        args: list[str],
        bound_to_caller: bool,
        env: dict[str, str] | None = None,
    ) -> None:
        """Start one process, log in `logs/NAME.log`, its pid recorded in the state file."""
        assert self.state is not None
        if name == "etcd":
            env = {**os.environ, "ETCD_UNSUPPORTED_ARCH": os.uname().machine}
        proc = spawn(
            [str(binary), *args],
            self.logs / f"{name}.log",
            cwd=self.workdir,
            bound_to_caller=bound_to_caller,
            env=env,
        )
        self._procs[name] = proc
        self.state.pids[name] = proc.pid
        self._save_state()

    def wait_ready(self, name: str, probe: Callable[[], bool], deadline: float) -> None:
        wait_process_ready(name, self._procs[name], self.logs / f"{name}.log", probe, deadline)

    def _wait_ready(self, name: str, deadline: float) -> None:
        assert self.state is not None
        ports = self.state.ports

        def probe() -> bool:
            match name:
                case "etcd":
                    url = f"http://127.0.0.1:{ports['etcd']}/health"
                    with urllib.request.urlopen(url, timeout=2) as resp:
                        return bool(json.load(resp).get("health") == "true")
                case "kube-apiserver":
                    return self._healthy("/readyz")
                case "kube-controller-manager" | "kube-scheduler":
                    port = ports["controller-manager" if name == "kube-controller-manager" else "scheduler"]
                    insecure = ssl.create_default_context()
                    insecure.check_hostname = False
                    insecure.verify_mode = ssl.CERT_NONE  # self-signed serving cert, local only
                    with urllib.request.urlopen(
                        f"https://127.0.0.1:{port}/healthz", timeout=2, context=insecure
                    ) as resp:
                        return bool(resp.status == 200)
                case _:
                    return port_open(ports["kwok"])

        self.wait_ready(name, probe, deadline)

    def _ssl(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_crt))
        ctx.load_cert_chain(str(self.pki.admin_crt), str(self.pki.admin_key))
        return ctx

    def _healthy(self, path: str) -> bool:
        assert self.state is not None
        with urllib.request.urlopen(self.state.server + path, timeout=2, context=self._ssl()) as resp:
            return bool(resp.status == 200)

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        assert self.state is not None
        req = urllib.request.Request(
            self.state.server + path,
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10, context=self._ssl()) as resp:
            return json.load(resp)

    def _get(self, path: str) -> Any:
        try:
            return self._request("GET", path)
        except urllib.error.HTTPError as err:
            if err.code == 404:
                return None
            raise

    def _create_node(self, name: str) -> None:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "type": "kwok",
                },
            },
            # No taint: ordinary pods (the demo's, the tests') schedule without tolerations.
            "spec": {},
            "status": {
                "allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"},
            },
        }
        self._request("POST", "/api/v1/nodes", node)

    def node_ready(self, name: str) -> bool:
        node = self._get(f"/api/v1/nodes/{name}")
        conditions = (node or {}).get("status", {}).get("conditions", [])
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
        # The node lifecycle controller taints a node not-ready while it registers: wait that out.
        taints = (node or {}).get("spec", {}).get("taints", [])
        return ready and all(taint["key"] == REAL_NODE_TAINT for taint in taints)

    def _reap(self, name: str) -> None:
        proc = self._procs.get(name)
        if proc is not None:
            proc.poll()

    def _save_state(self) -> None:
        assert self.state is not None
        self.state_file.write_text(json.dumps(asdict(self.state), indent=2) + "\n")

    def _load_state(self) -> State | None:
        try:
            return State(**json.loads(self.state_file.read_text()))
        except (FileNotFoundError, ValueError, TypeError):
            return None


def serviceaccount_kubeconfig(
    admin_kubeconfig: Path, namespace: str, name: str, path: Path, *, seconds: int = 24 * 3600
) -> Path:
    """Mint a token (TokenRequest) for a ServiceAccount and write a kubeconfig that uses it,
    so a process runs with exactly the RBAC bound to that account. Works on any cluster
    the admin kubeconfig reaches, not only on this harness's."""
    api = config.new_client_from_config(str(admin_kubeconfig))  # type: ignore[no-untyped-call]
    try:
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=seconds)
        )
        answer = client.CoreV1Api(api).create_namespaced_service_account_token(name, namespace, request)
        token = str(answer.status.token) if answer.status else ""
        conf = api.configuration
        ca_pem = Path(conf.ssl_ca_cert).read_bytes()
    finally:
        api.close()
    if not token:
        raise ControlPlaneError(f"the API server issued no token for {namespace}/{name}")
    path.write_text(kubeconfig_yaml(str(conf.host), ca_pem, {"token": token}, name=f"{namespace}-{name}"))
    path.chmod(0o600)
    return path


@contextlib.contextmanager
def running_cluster(workdir: Path) -> Iterator[ControlPlane]:
    """A cluster for the life of the `with` block, bound to this process."""
    plane = ControlPlane(workdir)
    plane.start(bound_to_caller=True)
    try:
        yield plane
    finally:
        plane.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flagops_dev.devcluster", description=__doc__.split("\n")[0]
    )
    parser.add_argument("command", choices=("up", "down", "status", "build", "prometheus"))
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="NAME=HOST:PORT[,LABEL=VALUE...]",
        help="prometheus: a target to scrape (repeatable)",
    )
    args = parser.parse_args(argv)
    plane = ControlPlane(args.workdir)
    try:
        match args.command:
            case "build":
                build_binaries()
            case "up":
                state = plane.running()
                if state is not None:
                    print(f"control plane already running at {state.server}", file=sys.stderr)
                    plane.refresh_real_node()
                else:
                    binaries = build_binaries()
                    state = plane.start(bound_to_caller=False, binaries=binaries, real_node=True)
                    print(
                        f"control plane up at {state.server} in {plane.startup_seconds:.1f}s "
                        f"(logs: {plane.logs})",
                        file=sys.stderr,
                    )
                print(f"export KUBECONFIG={state.kubeconfig}")
            case "down":
                had = plane._load_state() is not None
                plane.stop()
                print("control plane stopped" if had else "no control plane was running", file=sys.stderr)
            case "prometheus":
                return _run_prometheus(args.workdir, args.target)
            case "status":
                state = plane.running()
                if state is None:
                    print("not running", file=sys.stderr)
                    return 1
                print(f"running at {state.server}; export KUBECONFIG={state.kubeconfig}")
    except ControlPlaneError as err:
        print(f"devcluster: {err}", file=sys.stderr)
        return 1
    return 0


def _run_prometheus(workdir: Path, targets: list[str]) -> int:
    """Run Prometheus in the foreground until SIGTERM/SIGINT (the demo runs it in the background)."""
    workdir.mkdir(parents=True, exist_ok=True)
    server = Prometheus(workdir)
    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    url = server.start(bound_to_caller=True)
    for target in targets:
        name, _, rest = target.partition("=")
        address, *pairs = rest.split(",")
        server.add_target(name, address, dict(pair.split("=", 1) for pair in pairs))
    print(url, flush=True)
    try:
        while not stop:
            time.sleep(0.2)
    finally:
        server.stop()
    return 0


PROMETHEUS_FETCH = REPO_ROOT / "hack" / "prometheus" / "fetch.sh"


def prometheus_binary() -> Path:
    """Debian's Prometheus, unpacked into the cache by hack/prometheus/fetch.sh."""
    out = subprocess.run(
        ["bash", str(PROMETHEUS_FETCH), "--print-path"], check=False, stdout=subprocess.PIPE, text=True
    )
    if out.returncode != 0 or not out.stdout.strip():
        raise ControlPlaneError(f"{PROMETHEUS_FETCH} failed with exit code {out.returncode}")
    return Path(out.stdout.strip().splitlines()[-1])


class Prometheus:
    """A real Prometheus on loopback, scraping whatever `add_target` names (file-based discovery)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir.resolve()
        self.targets = self.workdir / "targets"
        self.log = self.workdir / "prometheus.log"
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, bound_to_caller: bool, deadline: float = 60.0, scrape_interval: str = "1s") -> str:
        binary = prometheus_binary()
        self.targets.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        config = self.workdir / "prometheus.yml"
        # JSON is YAML: the config needs no YAML library either.
        config.write_text(
            json.dumps(
                {
                    "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
                    "scrape_configs": [
                        {
                            "job_name": "flagops-dev",
                            "file_sd_configs": [
                                {"files": [str(self.targets / "*.json")], "refresh_interval": "1s"}
                            ],
                        }
                    ],
                },
                indent=2,
            )
        )
        self._proc = spawn(
            [
                str(binary),
                f"--config.file={config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=2h",
                "--web.enable-lifecycle",
            ],
            self.log,
            cwd=self.workdir,
            bound_to_caller=bound_to_caller,
        )

        def ready() -> bool:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                return bool(resp.status == 200)

        wait_process_ready("prometheus", self._proc, self.log, ready, deadline)
        return self.url

    def add_target(self, name: str, address: str, labels: dict[str, str] | None = None) -> None:
        """Scrape http://ADDRESS/metrics from now on, with these labels on every series."""
        path = self.targets / f"{name}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps([{"targets": [address], "labels": labels or {}}]))
        tmp.replace(path)  # atomic: Prometheus never reads half a file

    def remove_target(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.targets / f"{name}.json").unlink()

    def stop(self, grace: float = 10.0) -> None:
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGTERM)
        try:
            self._proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
        self._proc = None


if __name__ == "__main__":
    sys.exit(main())
