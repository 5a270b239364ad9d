"""Pure helpers: conditions, merge patches, selectors, config, agent status parsing, metrics."""

from __future__ import annotations

from pathlib import Path

import pytest
from hotswap_operator import conditions as cond
from hotswap_operator.agent_client import parse_request_counters
from hotswap_operator.config import Config, ConfigError
from hotswap_operator.models import LabelSelector, RerankerModelSpec
from hotswap_operator.names import boot_configmap, model_path, pod_url, resource_key
from hotswap_operator.observed import AgentStatus
from hotswap_operator.patches import merge_patch
from hotswap_operator.selectors import matches, parse_query, to_query
from pydantic import ValidationError

from .sim import make_spec


def test_set_condition_moves_transition_time_only_on_a_flip() -> None:
    c1 = cond.set_condition([], cond.READY, False, "Progressing", "0/3", now="t1", generation=1)
    c2 = cond.set_condition(c1, cond.READY, False, "Progressing", "1/3", now="t2", generation=2)
    assert c2[0].last_transition_time == "t1" and c2[0].message == "1/3" and c2[0].observed_generation == 2
    c3 = cond.set_condition(c2, cond.READY, True, "RolloutComplete", "", now="t3")
    assert c3[0].last_transition_time == "t3" and c3[0].status == "True"
    c4 = cond.set_condition(c3, cond.DEGRADED, False, "AsExpected", "", now="t4")
    c4 = cond.set_condition(c4, cond.PROGRESSING, False, "RolloutComplete", "", now="t4")
    assert [c.type for c in c4] == [cond.READY, cond.PROGRESSING, cond.DEGRADED]
    assert cond.TYPES == (cond.READY, cond.RECONCILING, cond.STALLED, cond.PROGRESSING, cond.DEGRADED)
    assert cond.is_true(c4, cond.READY) and not cond.is_true(c4, cond.DEGRADED)


def test_merge_patch_is_rfc7386() -> None:
    old = {"a": 1, "b": {"c": 2, "d": 3}, "e": [1, 2], "gone": True}
    new = {"a": 1, "b": {"c": 5}, "e": [1], "f": {"g": 1}}
    assert merge_patch(old, new) == {"b": {"c": 5, "d": None}, "e": [1], "f": {"g": 1}, "gone": None}
    assert merge_patch(new, new) is None


def test_selectors_round_trip_and_match() -> None:
    sel = LabelSelector.model_validate(
        {
            "matchLabels": {"app": "reranker", "tier": "gpu"},
            "matchExpressions": [
                {"key": "zone", "operator": "In", "values": ["a", "b"]},
                {"key": "legacy", "operator": "DoesNotExist"},
                {"key": "track", "operator": "NotIn", "values": ["canary"]},
                {"key": "hotswap.dev/managed", "operator": "Exists"},
            ],
        }
    )
    query = to_query(sel)
    assert query == "app=reranker,tier=gpu,zone in (a,b),!legacy,track notin (canary),hotswap.dev/managed"
    assert parse_query(query) == sel
    labels = {"app": "reranker", "tier": "gpu", "zone": "a", "hotswap.dev/managed": "1"}
    assert matches(sel, labels)
    assert not matches(sel, {**labels, "legacy": "x"})
    assert not matches(sel, {**labels, "zone": "c"})
    assert not matches(sel, {**labels, "track": "canary"})
    assert not matches(sel, {k: v for k, v in labels.items() if k != "hotswap.dev/managed"})
    assert parse_query("") is None


@pytest.mark.parametrize(
    ("patch", "needle"),
    [
        ({"version": "V2"}, "version"),
        ({"version": "v2/../x"}, "version"),
        ({"version": "-v2"}, "version"),
        ({"version": "v" * 64}, "version"),
        ({"source": {"uri": "ftp://x/y"}}, "uri"),
        ({"source": {"uri": "file:///x", "sha256": "abc"}}, "sha256"),
        ({"selector": {}}, "selector must not be empty"),
        ({"selector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}, "needs at least one value"),
        ({"rollout": {"canary": [{"query": "q", "documents": ["a"], "expectTop": 1}]}}, "expectTop"),
        ({"rollout": {"analysis": {"maxErrorRate": 2}}}, "maxErrorRate"),
        ({"rollout": {"podTimeoutSeconds": 0}}, "podTimeoutSeconds"),
        ({"unknownField": 1}, "unknownField"),
    ],
)
def test_spec_validation_refuses_bad_fields(patch: dict, needle: str) -> None:
    raw = make_spec("v2").wire()
    raw.update(patch)
    with pytest.raises(ValidationError) as info:
        RerankerModelSpec.model_validate(raw)
    assert needle in str(info.value)


def test_spec_defaults_and_fingerprint() -> None:
    spec = make_spec("v2")
    assert spec.rollout.prefetch and spec.rollout.pod_timeout_seconds == 300 and spec.rollback.automatic
    assert spec.history_limit == 10 and spec.rollout.analysis.max_error_rate == 0.01
    assert spec.fingerprint() == make_spec("v2").fingerprint() != make_spec("v3").fingerprint()


def test_names_in_one_place() -> None:
    assert resource_key("ns", "m") == "ns/m"
    assert boot_configmap("m") == "m-boot" and boot_configmap("m", "custom") == "custom"
    assert pod_url("127.0.0.2", 9090) == "http://127.0.0.2:9090"
    assert pod_url("fd00::1", 9090, "/v1/status", "https") == "https://[fd00::1]:9090/v1/status"
    assert (
        model_path("ns", "m", "status") == "/apis/hotswap.dev/v1alpha1/namespaces/ns/rerankermodels/m/status"
    )


def test_config_from_env_and_errors_name_the_variable(tmp_path: Path) -> None:
    cfg = Config.from_env({"HOTSWAP_OPERATOR_AGENT_PORT": "9191", "HOTSWAP_OPERATOR_POLL_SECONDS": "0.2"})
    assert cfg.agent_port == 9191 and cfg.poll_interval == 0.2 and cfg.server_port == 8080
    with pytest.raises(ConfigError, match="HOTSWAP_OPERATOR_AGENT_PORT"):
        Config.from_env({"HOTSWAP_OPERATOR_AGENT_PORT": "http"})
    with pytest.raises(ConfigError, match="HOTSWAP_OPERATOR_RESYNC_SECONDS"):
        Config.from_env({"HOTSWAP_OPERATOR_RESYNC_SECONDS": "-1"})
    with pytest.raises(ConfigError, match="HOTSWAP_OPERATOR_AGENT_SCHEME"):
        Config.from_env({"HOTSWAP_OPERATOR_AGENT_SCHEME": "ftp"})
    missing = Config.from_env({"HOTSWAP_OPERATOR_AGENT_TOKEN_FILE": str(tmp_path / "nope")})
    with pytest.raises(ConfigError, match="HOTSWAP_OPERATOR_AGENT_TOKEN_FILE"):
        missing.read_token()
    (tmp_path / "token").write_text("  s3cret\n")
    assert (
        Config.from_env({"HOTSWAP_OPERATOR_AGENT_TOKEN_FILE": str(tmp_path / "token")}).read_token()
        == "s3cret"
    )


def test_operator_help_lists_its_variables_and_bad_ones_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from hotswap_operator import cli
    from hotswap_operator.config import OPTIONS

    with pytest.raises(SystemExit) as exited:
        cli.main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert all(o.env in out for o in OPTIONS) and "(default: 9090)" in out and "--standalone" in out
    monkeypatch.setenv("HOTSWAP_OPERATOR_POLL_SECONDS", "0")
    assert cli.main(["--standalone"]) == 2
    assert (
        "hotswap-operator: HOTSWAP_OPERATOR_POLL_SECONDS: must be a positive number"
        in capsys.readouterr().err
    )


def test_agent_status_is_read_leniently() -> None:
    st = AgentStatus.model_validate(
        {
            "pod": "p",
            "active": {"version": "v1", "digest": "d1"},
            "previous": {"version": None},  # an empty slot reads as none
            "staged": {"version": "v2"},
            "onDisk": [{"version": "v1", "digest": "d1", "sizeBytes": 3}, {"version": "v2"}],
            "operation": {"id": "x", "kind": "stage", "version": "v2", "state": "running", "progress": {}},
            "somethingNew": {"a": 1},
        }
    )
    assert st.active_version == "v1" and st.staged is not None and st.staged.version == "v2"
    assert st.previous is None
    assert st.busy and st.has_on_disk("v2") and st.disk_digest("v1") == "d1"


def test_parse_request_counters_counts_5xx_on_scoring_routes() -> None:
    text = "\n".join(
        [
            "# HELP hotswap_requests_total HTTP requests by route and status",
            "# TYPE hotswap_requests_total counter",
            'hotswap_requests_total{route="/rerank",status="200"} 90.0',
            'hotswap_requests_total{route="/rerank",status="503"} 5.0',
            'hotswap_requests_total{route="/v1/rerank",status="429"} 5.0',
            'hotswap_requests_total{route="/metrics",status="500"} 7.0',
            'hotswap_requests_created{route="/rerank",status="200"} 1.7e9',
        ]
    )
    assert parse_request_counters(text) == (100.0, 5.0)
    assert parse_request_counters("") == (0.0, 0.0)


def test_unreadable_status_is_dropped_field_by_field() -> None:
    from hotswap_operator.models import parse_status

    st = parse_status(
        {"targetVersion": "v2", "rollout": {"phase": "Dancing"}, "history": "nope", "kopf": {"x": 1}}
    )
    assert st.target_version == "v2" and st.rollout is None and st.history == []


def test_source_digest_accepted_in_either_case_and_kept_lower_case() -> None:
    """docs/agent.md: the digest is 64 hex digits, case-insensitive; the operator compares it lower-case."""
    from hotswap_operator.models import Source

    upper = "9F2C4E1D5B7A3C8E0F6D2B4A1C9E7F5D3B1A8C6E4F2D0B9A7C5E3F1D8B6A4C2E"
    assert Source.model_validate({"uri": "s3://b/v1/", "sha256": upper}).sha256 == upper.lower()
