"""kubectl flagops, run through kubectl's own plugin discovery against the real control plane."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.helpers import (
    EXAMPLE,
    apply,
    bind,
    get_rollback,
    get_set,
    patch,
    patch_rollback,
    role,
    wait_phase,
    wait_ready,
)
from tests.e2e.test_bad_input import REFUSED
from tests.support import Cluster, Endpoint, kubectl, wait_until

DIALOG, HOMEWORK, STORAGE = (
    "USE_NEW_DIALOG_CONTEXT_REPO",
    "USE_NEW_HOMEWORK_REVIEW_SERVICE",
    "USE_NEW_STORAGE_ADAPTER",
)
# kubectl finds kubectl-flagops on PATH, where `pip install` put it beside this Python.
PLUGIN_PATH = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def plugin_env(cluster: Cluster) -> dict[str, str]:
    return {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "PATH": PLUGIN_PATH}


def flagops(cluster: Cluster, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """`kubectl flagops ARGS` as a user types it."""
    return subprocess.run(
        ["kubectl", "flagops", *args],
        capture_output=True,
        text=True,
        env=plugin_env(cluster),
        timeout=timeout,
        check=False,
    )


def created_name(result: subprocess.CompletedProcess[str]) -> str:
    match = re.search(r"rollbackrequest\.flagops\.io/(\S+) created", result.stdout)
    assert match, result.stdout + result.stderr
    return match.group(1)


def enable(cluster: Cluster, namespace: str, *flags: str) -> None:
    for flag in flags:
        result = flagops(cluster, "-n", namespace, "enable", "epic21", flag)
        assert result.returncode == 0, result.stderr
        assert f"featureflagset/epic21: {flag} enabled" in result.stdout

    def served() -> bool:
        effective = get_set(cluster, namespace).get("status", {}).get("effective", {})
        return all(effective.get(flag) is True for flag in flags)

    wait_until(f"{', '.join(flags)} served", served)
    wait_ready(cluster, namespace)


def add_flag_check(cluster: Cluster, namespace: str, index: int, check: dict[str, Any]) -> None:
    patch(
        cluster,
        namespace,
        "featureflagset",
        "epic21",
        [{"op": "add", "path": f"/spec/flags/{index}/checks", "value": [check]}],
    )


def test_rollback_wait_exits_0_when_it_succeeds_and_non_zero_when_a_check_fails_release_and_abort(
    cluster: Cluster, namespace: str, epic21: dict[str, Any], endpoint: Endpoint
) -> None:
    listed = subprocess.run(
        ["kubectl", "plugin", "list"], capture_output=True, text=True, env=plugin_env(cluster), check=False
    )
    assert f"{Path(sys.executable).parent}/kubectl-flagops" in listed.stdout

    quick = {"intervalSeconds": 1, "deadlineSeconds": 60}
    add_flag_check(
        cluster, namespace, 0, {"name": "health", "http": {"url": f"{endpoint.url}/healthz"}, **quick}
    )
    add_flag_check(
        cluster, namespace, 1, {"name": "broken", "http": {"url": f"{endpoint.url}/broken"}, **quick}
    )
    enable(cluster, namespace, DIALOG, HOMEWORK)

    ok = flagops(
        cluster, "-n", namespace, "rollback", "epic21", DIALOG, "--reason", "dialog errors", "--incident",
        "INC-7", "--wait", "--timeout", "120",
    )  # fmt: skip
    assert ok.returncode == 0, ok.stdout + ok.stderr
    name = created_name(ok)
    assert f"{DIALOG}: true → false" in ok.stdout
    assert "Deployment/butler" in ok.stdout
    assert re.search(rf"{name}: \S+ Succeeded", ok.stdout)
    done = get_rollback(cluster, namespace, name)
    assert done["status"]["phase"] == "Succeeded"
    assert (done["spec"]["reason"], done["spec"]["incident"]) == ("dialog errors", "INC-7")
    assert [c["phase"] for c in done["status"]["checks"]] == ["Passed"]

    bad = flagops(cluster, "-n", namespace, "rollback", "epic21", HOMEWORK, "--wait", "--timeout", "120")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    failed = get_rollback(cluster, namespace, created_name(bad))
    assert failed["status"]["phase"] == "Failed"
    assert re.search(rf"{created_name(bad)}: \S+ Failed", bad.stdout)

    history = flagops(cluster, "-n", namespace, "history", "epic21", "-o", "json")
    assert history.returncode == 0, history.stderr
    rollbacks = [e for e in json.loads(history.stdout) if e["what"] == "rollback"]
    assert [(e["name"], e["phase"]) for e in rollbacks] == [
        (created_name(bad), "Failed"),
        (name, "Succeeded"),
    ]

    # release lifts the lock: the dialog flag is served as its spec says again.
    released = flagops(cluster, "-n", namespace, "release", name)
    assert released.returncode == 0, released.stderr
    wait_until(
        f"{DIALOG} served from the spec again",
        lambda: get_set(cluster, namespace)["status"]["effective"].get(DIALOG) is True,
    )

    # A rollback of every flag without --emergency needs approval; abort stops it there.
    waiting = flagops(cluster, "-n", namespace, "rollback", "epic21", "--all")
    assert waiting.returncode == 0, waiting.stderr
    wait_phase(cluster, namespace, created_name(waiting), "AwaitingApproval")
    aborted = flagops(cluster, "-n", namespace, "abort", created_name(waiting))
    assert aborted.returncode == 0, aborted.stderr
    wait_phase(cluster, namespace, created_name(waiting), "Aborted")
    again = flagops(cluster, "-n", namespace, "abort", created_name(waiting))
    assert again.returncode == 1 and "already ended (Aborted): nothing to abort" in again.stderr


def test_approve_fills_in_who_the_api_server_says_you_are_and_the_policy_decides(
    cluster: Cluster, namespace: str, policies: None, epic21: dict[str, Any]
) -> None:
    role(
        cluster,
        namespace,
        "responder",
        ("get,list,watch,create,patch", "rollbackrequests.flagops.io"),
        ("get,list,watch", "featureflagsets.flagops.io"),
    )
    for group in ("ep21-oncall", "ep21-tech-lead", "operations-managers"):
        for resource in ("rollbackrequests", "featureflagsets"):
            bind(cluster, namespace, f"responder-{resource}", f"--group={group}")
    enable(cluster, namespace, DIALOG, STORAGE)

    lena = ("--as", "lena", "--as-group", "ep21-tech-lead")
    multi = flagops(cluster, "-n", namespace, *lena, "rollback", "epic21", DIALOG, STORAGE)
    assert multi.returncode == 0, multi.stdout + multi.stderr
    name = created_name(multi)
    assert "Scenario: MultiFlag, approval required" in multi.stdout
    wait_phase(cluster, namespace, name, "AwaitingApproval")

    def policy_refuses_carol() -> str | None:
        result = kubectl(
            cluster.kubeconfig, "--as=carol", "--as-group=ep21-oncall", "-n", namespace, "patch", "rollback",
            name, "--dry-run=server", "--type=merge", "-p",
            json.dumps({"spec": {"approved": True, "approvedBy": "carol"}}), check=False,
        )  # fmt: skip
        return result.stderr if "may not approve" in result.stderr else None

    wait_until("the approval policy enforced", policy_refuses_carol, timeout=30)

    carol = flagops(cluster, "-n", namespace, "--as", "carol", "--as-group", "ep21-oncall", "approve", name)
    assert carol.returncode == 1, carol.stdout + carol.stderr
    assert "carol may not approve MultiFlag rollbacks of FeatureFlagSet epic21" in carol.stderr
    assert "approvers: group:operations-managers" in carol.stderr
    assert get_rollback(cluster, namespace, name)["spec"].get("approved") is not True

    olga = flagops(
        cluster, "-n", namespace, "approve", name, "--as", "olga", "--as-group", "operations-managers"
    )
    assert olga.returncode == 0, olga.stdout + olga.stderr
    assert f"rollbackrequest/{name} approved by olga" in olga.stdout
    done = wait_phase(cluster, namespace, name, "Succeeded")
    assert done["spec"]["approvedBy"] == done["status"]["approvedBy"] == "olga"


class Terminal:
    """A command on a pseudo-terminal, its output collected as it is written."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        master, slave = pty.openpty()
        self.proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
        os.close(slave)
        self._master = master
        self._chunks: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self._master, 65536)
            except OSError:  # EIO: the other side closed
                return
            if not data:
                return
            self._chunks.append(data)

    @property
    def raw(self) -> str:
        return b"".join(self._chunks).decode(errors="replace")

    @property
    def phases(self) -> list[str]:
        """The phase of each frame drawn, in order."""
        return re.findall(r"Phase:\s+\S+ (\w+)", ANSI.sub("", self.raw))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(5)
        os.close(self._master)


def test_get_rollback_watch_redraws_each_phase_as_it_happens_and_ends_on_ctrl_c(
    cluster: Cluster, namespace: str, epic21: dict[str, Any], endpoint: Endpoint
) -> None:
    endpoint.routes["/ready"] = (503, {"status": "starting"})
    enable(cluster, namespace, DIALOG, STORAGE)
    # A multi-flag rollback waits for approval; its check holds it in Validating until /ready is 200.
    check = {
        "name": "ready",
        "http": {"url": f"{endpoint.url}/ready"},
        "intervalSeconds": 1,
        "failureLimit": 100,
    }
    body = {
        "apiVersion": "flagops.io/v1alpha1",
        "kind": "RollbackRequest",
        "metadata": {"name": "watched"},
        "spec": {"flagSet": "epic21", "flags": [DIALOG, STORAGE], "checks": [check]},
    }
    apply(cluster, namespace, body)
    wait_phase(cluster, namespace, "watched", "AwaitingApproval")

    term = Terminal(
        ["kubectl", "flagops", "-n", namespace, "get", "rollback", "watched", "-w"], plugin_env(cluster)
    )
    try:
        wait_until("AwaitingApproval drawn", lambda: "AwaitingApproval" in term.phases)
        patch_rollback(cluster, namespace, "watched", approved=True, approvedBy="admin")
        wait_until("Validating drawn", lambda: "Validating" in term.phases)
        assert get_rollback(cluster, namespace, "watched")["status"]["phase"] == "Validating"
        assert "Succeeded" not in term.phases
        endpoint.routes["/ready"] = (200, {"status": "ok"})
        wait_until("Succeeded drawn", lambda: "Succeeded" in term.phases)
        assert get_rollback(cluster, namespace, "watched")["status"]["phase"] == "Succeeded"

        term.proc.send_signal(signal.SIGINT)
        assert term.proc.wait(timeout=15) == 0
    finally:
        term.close()
    phases = term.phases
    assert phases.index("AwaitingApproval") < phases.index("Validating") < phases.index("Succeeded")
    assert term.raw.count("\x1b[2J") == len(phases)  # each frame redrawn in place
    assert "\x1b[32m" in term.raw  # a terminal gets colour
    assert "Traceback" not in term.raw


def api_server_errors(stderr: str) -> list[str]:
    """The error lines of kubectl's `... is invalid: ...` message."""
    message = stderr.split(" is invalid: ", 1)[1].strip()
    if not message.startswith("* "):
        return [message]
    return [line[2:] for line in message.splitlines() if line.startswith("* ")]


def test_lint_refuses_the_bad_input_corpus_with_the_api_servers_own_words(
    cluster: Cluster, crds: None, namespace: str, tmp_path: Path
) -> None:
    files = []
    for case, kind, spec, _ in REFUSED:
        path = tmp_path / f"{case}.yaml"
        path.write_text(
            yaml.safe_dump(
                {"apiVersion": "flagops.io/v1alpha1", "kind": kind, "metadata": {"name": "bad"}, "spec": spec}
            )
        )
        files.append(path)
    result = flagops(cluster, "lint", *map(str, files))
    assert result.returncode == 1
    blocks = dict(re.findall(r"^(\S+\.yaml): \w+ \"bad\" is invalid:\n((?:\* .*\n?)+)", result.stderr, re.M))
    assert f"{len(files)} invalid of {len(files)} flagops object(s)" in result.stderr
    for path, (case, _, _, message) in zip(files, REFUSED, strict=True):
        refused = kubectl(
            cluster.kubeconfig, "-n", namespace, "apply", "--dry-run=server", "-f", str(path), check=False
        )
        assert refused.returncode != 0, case
        linted = [line[2:] for line in blocks[str(path)].splitlines()]
        assert linted == api_server_errors(refused.stderr), case
        assert any(message in line for line in linted), case

    valid = flagops(cluster, "lint", str(EXAMPLE))
    assert valid.returncode == 0, valid.stderr
    assert "flagops object(s) valid" in valid.stdout
