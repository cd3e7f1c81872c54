"""kubectl flagops without a cluster: lint, the views, and the requests it would send."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from flagops.plugin import lint, main, view

REPO = Path(__file__).resolve().parents[2]
NOW = datetime.datetime(2026, 11, 27, 12, 0, 30, tzinfo=datetime.UTC)


def flagset(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "flagops.io/v1alpha1",
        "kind": "FeatureFlagSet",
        "metadata": {"name": "s"},
        "spec": spec,
    }


def errors(obj: dict[str, Any]) -> list[str]:
    problem = lint.check_object(obj, "f.yaml")
    return problem.errors if problem else []


# -- lint -------------------------------------------------------------------------------------


def test_lint_accepts_every_example() -> None:
    problems, seen = lint.check_paths([str(REPO / "examples")])
    assert problems == []
    assert seen >= 4


def test_lint_names_an_unknown_field_as_kubectl_apply_would_refuse_it() -> None:
    assert errors(flagset(flags=[{"name": "A", "enabeld": True}])) == [
        'spec.flags[0].enabeld: unknown field "spec.flags[0].enabeld" (not in the schema)'
    ]


def test_lint_reports_what_the_operator_would_call_degraded() -> None:
    cycle = flagset(flags=[{"name": "A", "requires": ["B"]}, {"name": "B", "requires": ["A"]}])
    (error,) = errors(cycle)
    assert error.startswith("spec.flags: DependencyCycle:") and "dependency cycle" in error
    off = flagset(flags=[{"name": "BASE"}, {"name": "CHILD", "enabled": True, "requires": ["BASE"]}])
    (error,) = errors(off)
    assert error.startswith("spec.flags: PrerequisiteDisabled:") and "enable BASE first" in error


def test_lint_applies_defaults_before_the_rules_as_the_api_server_does() -> None:
    request = {
        "apiVersion": "flagops.io/v1alpha1",
        "kind": "RollbackRequest",
        "metadata": {"name": "r"},
        "spec": {"flagSet": "s", "flags": ["A"]},  # all, dryRun and drill take their defaults
    }
    assert errors(request) == []


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({**flagset(), "apiVersion": "flagops.io/v1"}, 'no matches for kind "FeatureFlagSet" in version'),
        ({**flagset(), "metadata": {}}, "metadata.name: Required value"),
        ({**flagset(), "metadata": {"name": "Bad_Name"}}, "a lowercase RFC 1123 subdomain"),
        ({k: v for k, v in flagset().items() if k != "spec"}, "spec: Required value"),
    ],
)
def test_lint_checks_the_envelope(obj: dict[str, Any], message: str) -> None:
    assert any(message in e for e in errors(obj)), errors(obj)


def test_lint_reads_streams_and_ignores_other_kinds(tmp_path: Path) -> None:
    path = tmp_path / "all.yaml"
    docs = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}},
        flagset(flags=[{"name": "a"}]),
    ]
    path.write_text(yaml.safe_dump_all(docs))
    problems, seen = lint.check_paths([str(path)])
    assert seen == 1
    assert [p.source for p in problems] == [f"{path} (document 2)"]
    (tmp_path / "broken.yaml").write_text("spec: [unclosed")
    problems, _ = lint.check_paths([str(tmp_path / "broken.yaml")])
    assert "cannot be parsed" in problems[0].errors[0]


def test_lint_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(yaml.safe_dump(flagset(flags=[{"name": "A"}])))
    bad.write_text(yaml.safe_dump(flagset(flags=[{"name": "a"}])))
    assert main.main(["lint", str(good)]) == main.OK
    assert main.main(["lint", str(good), str(bad)]) == main.NOT_DONE
    err = capsys.readouterr().err
    assert f'{bad}: FeatureFlagSet "s" is invalid:' in err and "should match" in err
    assert "1 invalid of 2 flagops object(s)" in err


# -- requests ---------------------------------------------------------------------------------


def args(*argv: str) -> Any:
    return main.parser().parse_args(argv)


def test_a_rollback_gets_a_generated_name_and_the_flags_once() -> None:
    body = main.rollback_body(
        args("rollback", "epic21", "A", "B", "A", "--reason", "why", "--incident", "I-1")
    )
    assert body["metadata"] == {"generateName": "epic21-rollback-"}
    assert body["spec"] == {"flagSet": "epic21", "flags": ["A", "B"], "reason": "why", "incident": "I-1"}
    emergency = main.rollback_body(args("rollback", "epic21", "--all", "--emergency"))
    assert emergency["metadata"]["generateName"] == "epic21-emergency-"
    assert emergency["spec"] == {"flagSet": "epic21", "all": True, "emergency": True}
    assert main.rollback_body(args("rollback", "s", "--all", "--dry-run"))["spec"]["dryRun"] is True


@pytest.mark.parametrize("argv", [("rollback", "s"), ("rollback", "s", "A", "--all")])
def test_a_rollback_needs_flags_or_all(argv: tuple[str, ...]) -> None:
    with pytest.raises(main.Failure) as err:
        main.rollback_body(args(*argv))
    assert err.value.code == main.USAGE


def test_dry_run_and_drill_exclude_each_other() -> None:
    with pytest.raises(SystemExit):
        args("rollback", "s", "--all", "--dry-run", "--drill")


def test_connection_options_go_before_or_after_the_command() -> None:
    before = args("-n", "ns", "--context", "c", "get", "set", "x")
    after = args("get", "set", "x", "-n", "ns", "--context", "c")
    assert (before.namespace, before.context) == (after.namespace, after.context) == ("ns", "c")


@pytest.mark.parametrize(
    ("metadata", "application"),
    [
        (
            {"annotations": {"argocd.argoproj.io/tracking-id": "flags:flagops.io/FeatureFlagSet:ns/s"}},
            "flags",
        ),
        ({"labels": {"app.kubernetes.io/instance": "flags"}}, "flags"),
        ({"labels": {"app.kubernetes.io/instance": "r", "app.kubernetes.io/managed-by": "Helm"}}, None),
        ({}, None),
    ],
)
def test_argocd_management_is_recognised(metadata: dict[str, Any], application: str | None) -> None:
    assert main.argocd_application({"metadata": metadata}) == application


# -- views ------------------------------------------------------------------------------------

ROLLBACK = {
    "metadata": {"name": "rb", "namespace": "ns", "creationTimestamp": "2026-11-27T12:00:00Z"},
    "spec": {"flagSet": "epic21", "flags": ["A"], "reason": "errors", "incident": "INC-1"},
    "status": {
        "phase": "Succeeded",
        "message": "rolled back A",
        "locked": True,
        "startedAt": "2026-11-27T12:00:01Z",
        "approvedAt": "2026-11-27T12:00:01Z",
        "flagsAppliedAt": "2026-11-27T12:00:02Z",
        "rolloutCompletedAt": "2026-11-27T12:00:05Z",
        "validatedAt": "2026-11-27T12:00:09Z",
        "completedAt": "2026-11-27T12:00:09Z",
        "durations": {"timeToExecute": "4.0s", "timeToValidate": "4.0s", "total": "9.0s"},
        "plan": {
            "scenario": "SingleFlagInWindow",
            "flags": [{"name": "A", "from": True, "to": False}],
            "workloads": [{"kind": "Deployment", "name": "butler", "flags": ["A"]}],
            "checks": [{"name": "health", "type": "http", "source": "request"}],
        },
        "checks": [
            {
                "name": "health",
                "type": "http",
                "source": "request",
                "phase": "Passed",
                "target": "http://x/healthz",
                "expectation": "status 200",
                "attempts": 2,
                "consecutiveSuccesses": 1,
                "failures": 1,
                "measurements": [
                    {"at": "2026-11-27T12:00:08Z", "value": "200", "passed": True, "message": "ok"}
                ],
            }
        ],
    },
}


def test_the_rollback_view_tells_the_whole_story_in_plain_text() -> None:
    event = {
        "reason": "RollbackSucceeded",
        "type": "Normal",
        "note": "done",
        "eventTime": "2026-11-27T12:00:09Z",
    }
    text = view.rollback(ROLLBACK, [event], view.Style(colour=False), NOW)
    assert "\x1b[" not in text
    for expected in (
        "Phase:       ✔ Succeeded",
        "Flags applied  2026-11-27 12:00:02Z  1.0s",
        "Validated      2026-11-27 12:00:09Z  4.0s",
        "Durations: execute 4.0s, validate 4.0s, total 9.0s",
        "A: true → false",
        "Deployment/butler (A)",
        "target:   http://x/healthz",
        "2026-11-27 12:00:08Z  pass         200  ok",
        "RollbackSucceeded  done",
        "Incident:    INC-1",
    ):
        assert expected in text, expected


def test_colour_only_when_asked() -> None:
    assert "\x1b[32m✔\x1b[0m" in view.rollback(ROLLBACK, [], view.Style(colour=True), NOW)


def test_history_is_newest_first() -> None:
    flag_set = {"status": {"flags": [{"name": "A", "value": True, "lastChangedAt": "2026-11-27T11:00:00Z"}]}}
    entries = view.history(flag_set, [ROLLBACK], [])
    assert [e["what"] for e in entries] == ["rollback", "flag"]
    assert "incident: INC-1" in entries[0]["summary"]
    json.dumps(entries)  # -o json prints it


def test_lint_reads_a_drills_schedule_as_the_operator_would() -> None:
    drill = {
        "apiVersion": "flagops.io/v1alpha1",
        "kind": "RollbackDrill",
        "metadata": {"name": "d"},
        "spec": {"flagSet": "s", "all": True, "owner": "o", "stage": "x", "schedule": "61 * * * *"},
    }
    assert errors(drill) == ["spec.schedule: InvalidSchedule: minute: 61 is outside 0-59"]
    drill["spec"] = {**drill["spec"], "schedule": "@daily", "timeZone": "Mars/Olympus"}
    assert "is not an IANA time zone" in errors(drill)[0]
    drill["spec"] = {**drill["spec"], "timeZone": "Europe/Berlin"}
    assert errors(drill) == []
