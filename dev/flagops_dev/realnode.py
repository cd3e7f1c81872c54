"""A real node beside the kwok ones: kubelet and containerd running real runc containers.

The control plane's pods all run on kwok's simulated nodes; this node is where only real
processes can show something: the operator's image installed by Helm, and consumers whose
new process reads a changed flag from its environment. It is tainted, so only pods that
tolerate `flagops.dev/real-node` (and select it) land here.

What the machine needs (hack/node/build.sh installs it): root, cgroups, Debian's runc,
containernetworking-plugins and buildah. Everything binds to 127.0.0.1: pods use the host
network and loopback only. The node is named `localhost`, because the API server reaches a
kubelet by the node's Hostname address, kubelet refuses a loopback node IP, and `localhost`
is the one name that resolves to loopback on every machine.

Stopping it leaves nothing behind outside its directory: containers are killed through
their cgroups, shims by their socket address, mounts under the directory are unmounted,
and what kubelet writes outside it (/var/lib/kubelet/device-plugins, /var/log/containers)
is removed unless it was there before.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from flagops_dev import devcluster

NODE_NAME = "localhost"
TAINT_KEY = devcluster.REAL_NODE_TAINT
NODE_LABELS = {"type": "real", TAINT_KEY: "true"}
NODE_BUILD_SCRIPT = devcluster.REPO_ROOT / "hack" / "node" / "build.sh"
IMAGE_BUILD_SCRIPT = devcluster.REPO_ROOT / "hack" / "image" / "build.sh"
OPERATOR_REPOSITORY = "flagops.local/flagops"  # tagged with a hash of what the image is built from
BUTLER_IMAGE = "flagops.local/butler-sim:dev"
# Paths kubelet and containerd write outside their directories; removed at stop unless they existed before.
KUBELET_OUTSIDE_PATHS = (
    "/var/lib/kubelet/device-plugins",
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/log/pods",
    "/run/containerd",  # the shims' sockets, in /run/containerd/s whatever the state dir
)
CGROUP_ROOT = Path("/sys/fs/cgroup")
MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes with the NUL


def _print_paths(script: Path, *, quiet: bool) -> dict[str, str]:
    argv = ["bash", str(script), "--print-paths"]
    stderr = subprocess.DEVNULL if quiet else None
    out = subprocess.run(argv, check=False, stdout=subprocess.PIPE, stderr=stderr, text=True)
    if out.returncode != 0:
        raise devcluster.ControlPlaneError(f"{script} failed with exit code {out.returncode}")
    return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)


def build(*, quiet: bool = False) -> tuple[dict[str, str], dict[str, str]]:
    """The node's binaries and the images' archives (built or taken from the cache)."""
    if os.geteuid() != 0:
        raise devcluster.ControlPlaneError("the real node needs root (kubelet, containerd and runc do)")
    return _print_paths(NODE_BUILD_SCRIPT, quiet=quiet), _print_paths(IMAGE_BUILD_SCRIPT, quiet=quiet)


class RealNode:
    """kubelet + containerd under `<workdir>/node`, registered with the control plane."""

    def __init__(self, plane: devcluster.ControlPlane) -> None:
        self.plane = plane
        self.dir = plane.workdir / "node"
        self.socket = self.dir / "run" / "containerd.sock"
        # A cgroup parent of its own: two clusters' nodes (`make cluster` and a test run) never
        # see, or clean up, each other's containers.
        self.cgroup_root = "flagops-" + hashlib.sha256(str(self.dir).encode()).hexdigest()[:8]
        self._ctr_binary = "ctr"

    # -- start -------------------------------------------------------------------------

    def start(self, kubelet: Path, *, bound_to_caller: bool, deadline: float = 120.0) -> None:
        if len(f"{self.socket}.ttrpc") > MAX_SOCKET_PATH:
            raise devcluster.ControlPlaneError(
                f"{self.socket}.ttrpc is too long for a unix socket; use a shorter working directory"
            )
        binaries, images = build()
        self._ctr_binary = binaries["ctr"]
        state = self.plane.state
        assert state is not None, "start the control plane first"
        self.stop()
        existed = [path for path in KUBELET_OUTSIDE_PATHS if os.path.lexists(path)]
        for sub in ("containerd", "run", "cni", "kubelet", "pod-logs", "pki"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        (self.dir / "outside-paths.json").write_text(json.dumps({"existed": existed}))
        ports = {"kubelet": devcluster.free_port(), "kubelet-healthz": devcluster.free_port()}
        state.ports.update(ports)
        self._write_containerd_config(binaries)
        self.plane.launch(
            "containerd",
            Path(binaries["containerd"]),
            ["--config", str(self.dir / "containerd.toml")],
            bound_to_caller,
            env={**os.environ, "PATH": f"{Path(binaries['containerd']).parent}:{os.environ['PATH']}"},
        )
        self.plane.wait_ready(
            "containerd", lambda: self.socket.exists() and self._ctr("version") == 0, deadline
        )
        self.import_images(images)
        self._create_cgroup_root()
        self._write_kubelet_config(ports)
        self.plane.launch(
            "kubelet",
            kubelet,
            [
                f"--config={self.dir / 'kubelet.json'}",
                f"--kubeconfig={self.dir / 'kubelet.kubeconfig'}",
                f"--root-dir={self.dir / 'kubelet'}",
                f"--hostname-override={NODE_NAME}",
                "--node-labels=" + ",".join(f"{k}={v}" for k, v in NODE_LABELS.items()),
                "--v=1",
            ],
            bound_to_caller,
        )
        self.plane.wait_ready("kubelet", lambda: self.plane.node_ready(NODE_NAME), deadline)

    def import_images(self, images: dict[str, str] | None = None) -> None:
        """Load the images into the node's containerd (no registry could serve them)."""
        if images is None:
            binaries, images = build()
            self._ctr_binary = binaries["ctr"]
        for name, archive in images.items():
            if self._ctr("images", "import", "--no-unpack", archive) != 0:
                raise devcluster.ControlPlaneError(f"containerd could not import {name} from {archive}")

    def _ctr(self, *args: str) -> int:
        return subprocess.run(
            [self._ctr_binary, "--address", str(self.socket), "--namespace", "k8s.io", *args],
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
        ).returncode

    def _write_containerd_config(self, binaries: dict[str, str]) -> None:
        conf_dir = self.dir / "cni" / "net.d"
        conf_dir.mkdir(parents=True, exist_ok=True)
        # Pods use the host network; the runtime only needs a network config to say it is ready.
        (conf_dir / "10-loopback.conflist").write_text(
            json.dumps({"cniVersion": "1.0.0", "name": "loopback", "plugins": [{"type": "loopback"}]})
        )
        d, runtime, images = (
            self.dir,
            "plugins.'io.containerd.cri.v1.runtime'",
            "plugins.'io.containerd.cri.v1.images'",
        )
        (d / "containerd.toml").write_text(
            f"""version = 3
root = '{d / "containerd" / "root"}'
state = '{d / "containerd" / "state"}'
temp = '{d / "containerd" / "tmp"}'
# No NRI socket in /var/run, no tracing, no other snapshotters than overlayfs.
disabled_plugins = ['io.containerd.nri.v1.nri', 'io.containerd.tracing.processor.v1.otlp']

[grpc]
  address = '{self.socket}'

[ttrpc]
  address = '{self.socket}.ttrpc'

[debug]
  level = 'warn'

[plugins.'io.containerd.internal.v1.opt']
  path = '{d / "containerd" / "opt"}'

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = '127.0.0.1'
  stream_server_port = '0'

[{runtime}]
  # This machine's capability bounding set lacks CAP_SYS_RESOURCE: without this every
  # sandbox fails with "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true

[{runtime}.containerd]
  default_runtime_name = 'runc'

[{runtime}.containerd.runtimes.runc]
  runtime_type = 'io.containerd.runc.v2'

[{runtime}.containerd.runtimes.runc.options]
  BinaryName = '{binaries["runc"]}'
  Root = '{d / "run" / "runc"}'
  SystemdCgroup = false

[{runtime}.cni]
  bin_dirs = ['{binaries["cni-bin-dir"]}']
  conf_dir = '{conf_dir}'

[{images}]
  snapshotter = 'overlayfs'

[{images}.pinned_images]
  sandbox = 'registry.k8s.io/pause:{binaries["pause-version"]}'
"""
        )

    def _write_kubelet_config(self, ports: dict[str, int]) -> None:
        pki, state = self.plane.pki, self.plane.state
        assert state is not None
        certs = self.dir / "pki"
        client_crt, client_key = certs / "kubelet-client.crt", certs / "kubelet-client.key"
        serving_crt, serving_key = certs / "kubelet.crt", certs / "kubelet.key"
        # The Node authorizer knows a kubelet by this name and group.
        node_user = f"system:node:{NODE_NAME}"
        pki.issue(client_crt, client_key, common_name=node_user, organizations=("system:nodes",))
        pki.issue(serving_crt, serving_key, common_name=NODE_NAME, dns_names=(NODE_NAME,), ips=("127.0.0.1",))
        (self.dir / "kubelet.kubeconfig").write_text(
            devcluster.kubeconfig_yaml(
                state.server,
                pki.ca_crt.read_bytes(),
                {
                    "client-certificate-data": base64.b64encode(client_crt.read_bytes()).decode(),
                    "client-key-data": base64.b64encode(client_key.read_bytes()).decode(),
                },
                name=node_user,
            )
        )
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": "127.0.0.1",
            "port": ports["kubelet"],
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": ports["kubelet-healthz"],
            "readOnlyPort": 0,
            "tlsCertFile": str(serving_crt),
            "tlsPrivateKeyFile": str(serving_key),
            # Only the API server (and whoever it authorizes) reaches the kubelet's API.
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(pki.ca_crt)},
            },
            "authorization": {"mode": "Webhook"},
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "podLogsDir": str(self.dir / "pod-logs"),
            # This machine boots cgroup v1; kubelet 1.35+ refuses it unless told otherwise.
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": f"/{self.cgroup_root}",
            "failSwapOn": False,
            "registerWithTaints": [{"key": TAINT_KEY, "value": "true", "effect": "NoSchedule"}],
            "maxPods": 30,
            # A busy development disk must not evict the demo's pods or collect its images,
            # which no registry could give back.
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "resolvConf": "/etc/resolv.conf",
            "serializeImagePulls": False,
            "nodeStatusReportFrequency": "10s",
            "syncFrequency": "10s",
        }
        (self.dir / "kubelet.json").write_text(json.dumps(config, indent=2))

    # -- stop --------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop kubelet, every container, containerd and its shims; leave no mount or cgroup."""
        self.plane.terminate("kubelet")
        self._kill_cgroup_procs()
        self.plane.terminate("containerd")
        self._kill_shims()
        self._unmount_under(self.dir)
        self._remove_cgroups()
        self._remove_outside_paths()

    def _kill_cgroup_procs(self) -> None:
        for _ in range(50):
            pids = {pid for group in self.cgroups() for pid in _read_pids(group)}
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)

    def _kill_shims(self) -> None:
        needle = str(self.socket).encode()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                cmdline = (proc / "cmdline").read_bytes()
                if b"containerd-shim" in cmdline and needle in cmdline:
                    os.kill(int(proc.name), signal.SIGKILL)

    @staticmethod
    def _unmount_under(directory: Path) -> None:
        prefix = str(directory.resolve())
        for _ in range(5):
            mounts = [
                line.split()[4]
                for line in Path("/proc/self/mountinfo").read_text().splitlines()
                if line.split()[4] == prefix or line.split()[4].startswith(prefix + "/")
            ]
            if not mounts:
                return
            for mount in sorted(mounts, key=len, reverse=True):
                subprocess.run(["umount", "--lazy", mount], check=False, stderr=subprocess.DEVNULL)

    @staticmethod
    def _hierarchies() -> list[Path]:
        """The cgroup hierarchies: one on cgroup v2, one per controller set on v1."""
        if (CGROUP_ROOT / "cgroup.controllers").exists():
            return [CGROUP_ROOT]
        if not CGROUP_ROOT.is_dir():
            return []
        return [p for p in CGROUP_ROOT.iterdir() if (p / "cgroup.procs").exists() and not p.is_symlink()]

    def _create_cgroup_root(self) -> None:
        """kubelet wants its cgroup root to exist in every hierarchy it uses."""
        for hierarchy in self._hierarchies():
            group = hierarchy / self.cgroup_root
            group.mkdir(exist_ok=True)
            # A v1 cpuset group starts with no CPUs and no memory nodes: give it its parent's.
            for knob in ("cpuset.cpus", "cpuset.mems"):
                if (hierarchy / knob).exists() and not (group / knob).read_text().strip():
                    (group / knob).write_text((hierarchy / knob).read_text())

    def cgroups(self) -> list[Path]:
        """Every cgroup at or below the node's root, in each hierarchy, deepest first."""
        found: list[Path] = []
        for hierarchy in self._hierarchies():
            top = hierarchy / self.cgroup_root
            if top.is_dir():
                found += [Path(root) for root, _, _ in os.walk(top)]
        return sorted(found, key=lambda p: len(p.parts), reverse=True)

    def _remove_cgroups(self) -> None:
        for group in self.cgroups():
            with contextlib.suppress(OSError):
                group.rmdir()

    def _remove_outside_paths(self) -> None:
        record = self.dir / "outside-paths.json"
        if not record.exists():
            return
        existed = set(json.loads(record.read_text())["existed"])
        for path in KUBELET_OUTSIDE_PATHS:
            if path not in existed:
                subprocess.run(["rm", "-rf", "--one-file-system", path], check=False)
        record.unlink()


def _read_pids(group: Path) -> set[int]:
    with contextlib.suppress(OSError):
        return {int(pid) for pid in (group / "cgroup.procs").read_text().split()}
    return set()


@dataclass(frozen=True)
class Process:
    """A container's main process, as the host sees it."""

    pid: int
    uid: int
    environ: dict[str, str]
    root_read_only: bool

    def alive(self) -> bool:
        return devcluster.pid_alive(self.pid)


def container_process(container_id: str) -> Process | None:
    """The host process of a container, found through its cgroup (the id is in the path)."""
    bare = container_id.split("://", 1)[-1]
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if bare not in (proc / "cgroup").read_text():
                continue
            environ = dict(
                item.split("=", 1) for item in (proc / "environ").read_text().split("\0") if "=" in item
            )
            uid = int(re.search(r"^Uid:\s+(\d+)", (proc / "status").read_text(), re.M).group(1))  # type: ignore[union-attr]
            root = next(
                line.split()
                for line in (proc / "mountinfo").read_text().splitlines()
                if line.split()[4] == "/"
            )
        except (OSError, StopIteration):
            continue
        if (proc / "exe").resolve().name == "pause":
            continue
        return Process(int(proc.name), uid, environ, "ro" in root[5].split(","))
    return None


def operator_image() -> str:
    """The operator image's name and tag, as the image build made it."""
    _, images = build(quiet=True)
    return next(name for name in images if name.startswith(OPERATOR_REPOSITORY + ":"))


def chart_values(kubeconfig: Path, *, metrics_port: int) -> dict[str, object]:
    """Helm values that put the operator from the local image on the real node.

    Each one is a chart value a user could need too: the image and pull policy, the host
    network (there is no pod network), the API server's address (no kube-proxy serves the
    `kubernetes` Service), /metrics on loopback, and loopback as an allowed check target."""
    server = json.loads(kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    host, port = server.removeprefix("https://").rsplit(":", 1)
    repository, tag = operator_image().rsplit(":", 1)
    return {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "hostNetwork": True,
        "metrics": {"address": "127.0.0.1", "port": metrics_port},
        "extraEnv": [
            {"name": "KUBERNETES_SERVICE_HOST", "value": host},
            {"name": "KUBERNETES_SERVICE_PORT", "value": port},
        ],
        "allowedTargets": ["127.0.0.0/8"],
        "nodeSelector": {"type": NODE_LABELS["type"]},
        "tolerations": [{"key": TAINT_KEY, "operator": "Exists", "effect": "NoSchedule"}],
    }


def main() -> None:
    """`python -m flagops_dev.realnode values|process`: chart values; a container's process."""
    parser = argparse.ArgumentParser(prog="python -m flagops_dev.realnode", description=main.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    values = commands.add_parser("values", help="the chart values for the real node, as JSON (valid YAML)")
    values.add_argument("kubeconfig", type=Path)
    values.add_argument("--metrics-port", type=int, default=0, help="default: a free port")
    process = commands.add_parser("process", help="a container's process as the host sees it")
    process.add_argument("container_id", help="containerd://ID, as a pod's containerStatuses give it")
    process.add_argument("--env", action="append", default=[], help="show this variable (repeatable)")
    args = parser.parse_args()
    if args.command == "values":
        port = args.metrics_port or devcluster.free_port()
        print(json.dumps(chart_values(args.kubeconfig, metrics_port=port), indent=2))
        return
    found = container_process(args.container_id)
    if found is None:
        parser.exit(1, f"no process of container {args.container_id} on this machine\n")
    shown = "".join(f", {name}={found.environ.get(name, '')}" for name in args.env)
    print(f"host pid {found.pid}, uid {found.uid}{shown}")


if __name__ == "__main__":
    main()
