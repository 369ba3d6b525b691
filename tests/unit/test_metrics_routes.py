"""The metrics routes: one path per program on the proxy's port, and the Prometheus targets."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.localai.llamacpp.plugins.filter.metrics import (
    metrics_routes,
    scrape_targets,
)
from ansible_collections.localai.llamacpp.plugins.plugin_utils.engine_plan import engine_plan
from project import default_models


def test_one_host_routes_and_targets():
    engines = engine_plan(default_models(), "cpu")
    routes = metrics_routes(engines, "http://127.0.0.1:9400/metrics")
    assert [(r["path"], r["target"], r["remote"]) for r in routes] == [
        ("/engines/llamacpp-chat/metrics", "http://127.0.0.1:8090/metrics", False),
        ("/engines/llamacpp-embeddings/metrics", "http://127.0.0.1:8080/metrics", False),
        ("/gpus/metrics", "http://127.0.0.1:9400/metrics", False),
    ]
    groups = scrape_targets(routes, "gpu1.example:28000")
    assert groups[0] == {
        "targets": ["gpu1.example:28000"],
        "labels": {"__metrics_path__": "/metrics/", "program": "litellm"},
    }
    assert groups[1]["labels"] == {
        "__metrics_path__": "/engines/llamacpp-chat/metrics",
        "program": "llamacpp-chat",
        "kind": "chat",
        "alias": "gpt-3.5-turbo",
        "engine_host": "127.0.0.1",
    }
    assert groups[3]["labels"] == {"__metrics_path__": "/gpus/metrics", "program": "gpu-metrics"}
    assert all(g["targets"] == ["gpu1.example:28000"] for g in groups)


def test_no_gpu_route_without_an_exporter():
    routes = metrics_routes(engine_plan(default_models(), "cpu"))
    assert "/gpus/metrics" not in [r["path"] for r in routes]


def test_fleet_engines_get_their_node_in_the_path():
    engine = {"program": "llamacpp-chat", "host": "10.0.0.11", "port": 8090, "kind": "chat"}
    (route,) = metrics_routes([engine])
    assert route["path"] == "/nodes/10.0.0.11/engines/llamacpp-chat/metrics"
    assert route["target"] == "http://10.0.0.11:8090/metrics"
    assert route["remote"] is True


def test_two_engines_on_one_path_fail():
    engine = {"program": "llamacpp-chat", "host": "127.0.0.1", "port": 8090}
    with pytest.raises(AnsibleFilterError, match="share the metrics path"):
        metrics_routes([engine, dict(engine, port=8091)])


def test_an_engine_without_program_fails_with_its_name():
    with pytest.raises(AnsibleFilterError, match="lacks 'program'"):
        metrics_routes([{"host": "127.0.0.1", "port": 8090}])
