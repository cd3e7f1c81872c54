"""A real Argo CD beside the local control plane, for the GitOps tests and `make demo-gitops`.

Argo CD v3.2.11's application-controller and repo-server (hack/argocd/build.sh builds them
from the Go module proxy), Debian's redis, and a git smart-HTTP server on loopback serving
bare repositories the tests push to. flagops' health checks, actions and ignoreDifferences
go into `argocd-cm` exactly as the README tells users: `kubectl patch --patch-file
argocd/argocd-cm.yaml`.

Everything listens on 127.0.0.1 where the component allows it (the application-controller's
metrics server has no address flag).
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import os
import secrets
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from flagops_dev import devcluster

BUILD_SCRIPT = devcluster.REPO_ROOT / "hack" / "argocd" / "build.sh"
ARGOCD_CM_PATCH = devcluster.REPO_ROOT / "argocd" / "argocd-cm.yaml"
ARGOCD_SERVER_RBAC = devcluster.REPO_ROOT / "argocd" / "argocd-server-rbac.yaml"
NAMESPACE = "argocd"
IN_CLUSTER = "https://kubernetes.default.svc"

_ALL = ["create", "get", "list", "watch", "update", "patch", "delete"]
# Each component's ServiceAccount with the rights Argo CD v3.2's install.yaml gives it:
# (rules in namespace argocd, cluster-wide rules). The repo-server has none.
ACCOUNTS: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {
    "argocd-application-controller": (
        [
            {"apiGroups": [""], "resources": ["secrets", "configmaps"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["argoproj.io"], "resources": ["applications", "appprojects"], "verbs": _ALL},
            {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "list"]},
        ],
        [
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
            {"nonResourceURLs": ["*"], "verbs": ["*"]},
        ],
    ),
    "argocd-server": (
        [
            {"apiGroups": [""], "resources": ["secrets", "configmaps"], "verbs": _ALL},
            {
                "apiGroups": ["argoproj.io"],
                "resources": ["applications", "applicationsets", "appprojects"],
                "verbs": _ALL,
            },
            {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "list"]},
        ],
        [
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["delete", "get", "patch"]},
            {"apiGroups": [""], "resources": ["events"], "verbs": ["list"]},
            {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get"]},
            {
                "apiGroups": ["argoproj.io"],
                "resources": ["applications", "applicationsets"],
                "verbs": ["get", "list", "update", "watch"],
            },
        ],
    ),
    "argocd-repo-server": ([], []),
}


def build_paths(*, quiet: bool = False) -> dict[str, str]:
    out = subprocess.run(
        ["bash", str(BUILD_SCRIPT), "--print-paths"],
        check=False,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL if quiet else None,
        text=True,
    )
    if out.returncode != 0:
        raise devcluster.ControlPlaneError(f"{BUILD_SCRIPT} failed with exit code {out.returncode}")
    return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)


class GitServer:
    """`git http-backend` (smart HTTP, what Argo CD's go-git speaks) behind a loopback server,
    serving every bare repository under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._server: http.server.ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        root = str(self.root)

        class Handler(http.server.BaseHTTPRequestHandler):
            def handle_cgi(self) -> None:
                path, _, query = self.path.partition("?")
                length = int(self.headers.get("Content-Length") or 0)
                env = {
                    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "GIT_PROJECT_ROOT": root,
                    "GIT_HTTP_EXPORT_ALL": "1",
                    "GIT_CONFIG_NOSYSTEM": "1",
                    "HOME": root,
                    "PATH_INFO": path,
                    "QUERY_STRING": query,
                    "REQUEST_METHOD": self.command,
                    "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                    "CONTENT_LENGTH": str(length),
                    "REMOTE_ADDR": "127.0.0.1",
                }
                if self.headers.get("Content-Encoding"):
                    env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
                if self.headers.get("Git-Protocol"):
                    env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
                body = self.rfile.read(length) if length else b""
                out = subprocess.run(
                    ["git", "http-backend"], input=body, env=env, capture_output=True, check=False
                )
                # The CGI header block ends at the first blank line (CRLF or LF); what follows
                # is binary and must reach the client unchanged.
                ends = [(i, len(sep)) for sep in (b"\r\n\r\n", b"\n\n") if (i := out.stdout.find(sep)) >= 0]
                at, width = min(ends, default=(len(out.stdout), 0))
                head, payload = out.stdout[:at], out.stdout[at + width :]
                status, headers = 200, []
                for line in head.decode("latin-1").splitlines():
                    name, _, value = line.partition(":")
                    if name.lower() == "status":
                        status = int(value.split()[0])
                    elif name:
                        headers.append((name, value.strip()))
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = handle_cgi
            do_POST = handle_cgi

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True, name="git-http").start()
        return self.url

    def repository(self, name: str) -> str:
        """A new bare repository with a `main` branch; its URL."""
        path = self.root / f"{name}.git"
        subprocess.run(["git", "init", "--quiet", "--bare", "--initial-branch=main", str(path)], check=True)
        return f"{self.url}/{name}.git"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class Workspace:
    """A working clone that commits and pushes, as a person (or CI) changing Git would."""

    def __init__(self, path: Path, bare: Path) -> None:
        self.path = path
        env = {"GIT_AUTHOR_NAME": "flagops tests", "GIT_AUTHOR_EMAIL": "tests@flagops.invalid"}
        self._env = {
            **os.environ,
            **env,
            "GIT_COMMITTER_NAME": env["GIT_AUTHOR_NAME"],
            "GIT_COMMITTER_EMAIL": env["GIT_AUTHOR_EMAIL"],
        }
        subprocess.run(["git", "clone", "--quiet", str(bare), str(path)], check=True, env=self._env)
        self._git("checkout", "--quiet", "-B", "main")

    def _git(self, *args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(self.path), *args], check=True, capture_output=True, text=True, env=self._env
        ).stdout.strip()

    def write(self, relative: str, text: str) -> None:
        target = self.path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def remove(self, relative: str) -> None:
        (self.path / relative).unlink()

    def push(self, message: str) -> str:
        """Commit everything and push to main; the new commit's sha."""
        self._git("add", "--all")
        self._git("commit", "--quiet", "--allow-empty", "-m", message)
        self._git("push", "--quiet", "origin", "main")
        return self._git("rev-parse", "HEAD")


class ArgoCD:
    """Argo CD's application-controller, repo-server and API server, with redis, against a
    cluster; the controller and the server each run as their own ServiceAccount with the
    rights Argo CD's install manifest gives them."""

    def __init__(self, workdir: Path, kubeconfig: Path) -> None:
        self.workdir = workdir.resolve()
        self.kubeconfig = kubeconfig
        self.logs = self.workdir / "logs"
        self.server = ""
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self.cli_config = self.workdir / "cli-config"
        self._argocd = ""
        self._env: dict[str, str] = {}

    def start(self, *, bound_to_caller: bool = True, deadline: float = 90.0) -> None:
        paths = build_paths()
        self._argocd = paths["argocd"]
        self.logs.mkdir(parents=True, exist_ok=True)
        (self.workdir / "tmp").mkdir(exist_ok=True)
        self._env = {
            **os.environ,
            # The destination https://kubernetes.default.svc is this cluster, through KUBECONFIG.
            "ARGOCD_FAKE_IN_CLUSTER": "true",
            "ARGOCD_GPG_ENABLED": "false",
            "HOME": str(self.workdir),
            "TMPDIR": str(self.workdir / "tmp"),
        }
        password = secrets.token_urlsafe(16)
        self._install(Path(paths["argocd-crds"]), password)
        kubeconfigs = {
            account: devcluster.serviceaccount_kubeconfig(
                self.kubeconfig, NAMESPACE, account, self.workdir / f"{account}.kubeconfig"
            )
            for account in ACCOUNTS
        }
        redis, repo_server, repo_metrics, metrics, server, server_metrics = (
            devcluster.free_port() for _ in range(6)
        )
        self._spawn(
            "redis",
            [paths["redis-server"], f"--port {redis}", "--bind 127.0.0.1", "--save ''", "--appendonly no"],
            {**self._env, "LD_LIBRARY_PATH": paths["redis-lib"]},
            bound_to_caller,
        )
        self._wait("redis", redis, deadline)
        binaries = Path(paths["argocd"]).parent
        backends = [f"--redis=127.0.0.1:{redis}", "--loglevel=info"]
        self._spawn(
            "repo-server",
            [
                str(binaries / "argocd-repo-server"),
                "--address=127.0.0.1",
                f"--port={repo_server}",
                "--metrics-address=127.0.0.1",
                f"--metrics-port={repo_metrics}",
                "--disable-tls",
                # The default caches a branch's commit for 3 min: a push would be seen late.
                "--revision-cache-expiration=5s",
                *backends,
            ],
            {**self._env, "KUBECONFIG": str(kubeconfigs["argocd-repo-server"])},
            bound_to_caller,
        )
        self._wait("repo-server", repo_server, deadline)
        backends += [f"--repo-server=127.0.0.1:{repo_server}", "--repo-server-plaintext"]
        self._spawn(
            "application-controller",
            [
                str(binaries / "argocd-application-controller"),
                f"--namespace={NAMESPACE}",
                f"--metrics-port={metrics}",
                "--app-resync=15",
                "--app-resync-jitter=0",
                # v3 keeps resource health in redis unless told to keep it in the status.
                "--persist-resource-health",
                *backends,
            ],
            {**self._env, "KUBECONFIG": str(kubeconfigs["argocd-application-controller"])},
            bound_to_caller,
        )
        self._wait("application-controller", metrics, deadline)
        self._spawn(
            "server",
            [
                str(binaries / "argocd-server"),
                f"--namespace={NAMESPACE}",
                "--address=127.0.0.1",
                f"--port={server}",
                "--metrics-address=127.0.0.1",
                f"--metrics-port={server_metrics}",
                "--insecure",
                *backends,
            ],
            {**self._env, "KUBECONFIG": str(kubeconfigs["argocd-server"])},
            bound_to_caller,
        )
        self._wait("server", server, deadline)
        self.server = f"127.0.0.1:{server}"
        self.cli("login", self.server, "--plaintext", "--username", "admin", "--password", password)

    def stop(self) -> None:
        for name in ("server", "application-controller", "repo-server", "redis"):
            proc = self._procs.pop(name, None)
            if proc is None:
                continue
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """The `argocd` CLI, logged in to this Argo CD's API server as admin."""
        out = subprocess.run(
            [self._argocd, "--config", str(self.cli_config), *args],
            env=self._env,
            capture_output=True,
            text=True,
            check=False,
        )
        if check and out.returncode != 0:
            raise devcluster.ControlPlaneError(f"argocd {' '.join(args)}: {out.stderr.strip()}")
        return out

    def _spawn(self, name: str, argv: list[str], env: dict[str, str], bound_to_caller: bool) -> None:
        self._procs[name] = devcluster.spawn(
            argv, self.logs / f"{name}.log", cwd=self.workdir, bound_to_caller=bound_to_caller, env=env
        )

    def _wait(self, name: str, port: int, deadline: float) -> None:
        devcluster.wait_process_ready(
            name, self._procs[name], self.logs / f"{name}.log", lambda: devcluster.port_open(port), deadline
        )

    def _kubectl(self, *args: str, stdin: str | None = None) -> str:
        out = subprocess.run(
            ["kubectl", "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin,
            check=False,
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            raise devcluster.ControlPlaneError(f"kubectl {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout

    def _install(self, crds: Path, password: str) -> None:
        """Argo CD's CRDs, settings and ServiceAccounts, and flagops' customizations as the
        README installs them."""
        for crd in ("application-crd.yaml", "appproject-crd.yaml", "applicationset-crd.yaml"):
            self._kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crds / crd))
        self._kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/applications.argoproj.io")
        labels = {"app.kubernetes.io/part-of": "argocd"}
        objects: list[dict[str, Any]] = [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "argocd-cm", "namespace": NAMESPACE, "labels": labels},
                # Compare and refresh often: a test waits on what Argo CD sees.
                "data": {"timeout.reconciliation": "5s"},
            },
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "argocd-rbac-cm", "namespace": NAMESPACE, "labels": labels},
            },
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "argocd-cmd-params-cm", "namespace": NAMESPACE, "labels": labels},
            },
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "argocd-secret", "namespace": NAMESPACE, "labels": labels},
                "stringData": {
                    "server.secretkey": secrets.token_urlsafe(32),
                    "admin.password": self.cli("account", "bcrypt", "--password", password).stdout.strip(),
                    "admin.passwordMtime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                },
            },
            {
                "apiVersion": "argoproj.io/v1alpha1",
                "kind": "AppProject",
                "metadata": {"name": "default", "namespace": NAMESPACE},
                "spec": {
                    "sourceRepos": ["*"],
                    "destinations": [{"server": "*", "namespace": "*"}],
                    "clusterResourceWhitelist": [{"group": "*", "kind": "*"}],
                },
            },
        ]
        for account, (rules, cluster_rules) in ACCOUNTS.items():
            objects += _account(account, rules, cluster_rules)
        self._kubectl(
            "apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
        )
        self._kubectl("apply", "-f", str(ARGOCD_SERVER_RBAC))
        self._kubectl(
            "-n",
            NAMESPACE,
            "patch",
            "configmap",
            "argocd-cm",
            "--type",
            "merge",
            "--patch-file",
            str(ARGOCD_CM_PATCH),
        )

    def application(
        self, name: str, repo_url: str, path: str, namespace: str, *, sync_options: tuple[str, ...] = ()
    ) -> None:
        """An Application that syncs `path` of the repository into `namespace`, automatically."""
        app = {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Application",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                "project": "default",
                "source": {"repoURL": repo_url, "targetRevision": "main", "path": path},
                "destination": {"server": IN_CLUSTER, "namespace": namespace},
                "syncPolicy": {
                    "automated": {"prune": True, "selfHeal": True},
                    "syncOptions": ["RespectIgnoreDifferences=true", *sync_options],
                },
            },
        }
        self._kubectl("apply", "-f", "-", stdin=json.dumps(app))

    def get(self, name: str) -> dict[str, Any]:
        return json.loads(self._kubectl("-n", NAMESPACE, "get", "application", name, "-o", "json"))  # type: ignore[no-any-return]

    def delete(self, name: str) -> None:
        with contextlib.suppress(devcluster.ControlPlaneError):
            self._kubectl("-n", NAMESPACE, "delete", "application", name, "--wait=false")


def _account(
    name: str, rules: list[dict[str, Any]], cluster_rules: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """A ServiceAccount in namespace argocd with a Role and a ClusterRole of the same name."""
    subject = [{"kind": "ServiceAccount", "name": name, "namespace": NAMESPACE}]
    rbac = "rbac.authorization.k8s.io/v1"
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": NAMESPACE}}
    ]
    for kind, scope, granted in (
        ("Role", {"namespace": NAMESPACE}, rules),
        ("ClusterRole", {}, cluster_rules),
    ):
        if granted:
            meta = {"name": name, **scope}
            objects += [
                {"apiVersion": rbac, "kind": kind, "metadata": meta, "rules": granted},
                {
                    "apiVersion": rbac,
                    "kind": f"{kind}Binding",
                    "metadata": meta,
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name},
                    "subjects": subject,
                },
            ]
    return objects


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flagops_dev.argocd",
        description="Run Argo CD and a git server beside a cluster until SIGTERM (make demo-gitops).",
    )
    parser.add_argument("kubeconfig", type=Path)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--repository", default="flags", help="the git repository to create and serve")
    args = parser.parse_args(argv)
    git = GitServer(args.workdir / "git")
    argocd = ArgoCD(args.workdir / "argocd", args.kubeconfig)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        git.start()
        url = git.repository(args.repository)
        work = Workspace(args.workdir / "work", git.root / f"{args.repository}.git")
        argocd.start()
        print(f"ARGOCD_SERVER={argocd.server}", f"ARGOCD_CONFIG={argocd.cli_config}", sep="\n")
        print(f"REPO_URL={url}", f"WORKTREE={work.path}", sep="\n", flush=True)
        stop.wait()
    finally:
        argocd.stop()
        git.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
