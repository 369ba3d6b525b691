"""The balancer: one HAProxy frontend per alias, leastconn over the alias's engines.

The plan (the localai.llamacpp.balancer_plan filter) feeds both litellm.yaml (one deployment per
alias, at its frontend) and haproxy.cfg (a server per engine); every rendered haproxy.cfg here is
checked by HAProxy itself (`haproxy -c`, the binary `make test-tools` installs).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import jinja2
import pytest
import yaml
from ansible.errors import AnsibleFilterError
from ansible_collections.localai.llamacpp.plugins.filter.balancer import balancer_plan
from ansible_collections.localai.llamacpp.plugins.filter.metrics import metrics_routes
from ansible_collections.localai.llamacpp.plugins.plugin_utils.engine_plan import engine_plan
from project import REPO, container_interface, default_models, load

check = load("check_litellm_config", "roles/litellm_config/files/check_litellm_config.py")
SERVICE = REPO / "roles/stack_service"
LITELLM = REPO / "roles/litellm_config"
SERVICE_DEFAULTS = yaml.safe_load((SERVICE / "defaults/main.yml").read_text())
LITELLM_DEFAULTS = yaml.safe_load((LITELLM / "defaults/main.yml").read_text())
# The original setup: three Tesla P40s (24 GB, compute capability 6.1), replicas of the 8B model.
P40S = [
    {"index": i, "name": "Tesla P40", "compute_cap": "6.1", "memory_mib": 24576} for i in range(3)
]
FLEET_SETTINGS = yaml.safe_load((REPO / "group_vars/all/fleet.yml").read_text())
PORT_BASE = FLEET_SETTINGS["localai_balancer_port_base"]


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined, trim_blocks=True, keep_trailing_newline=True
    )
    env.filters.update(
        comment=lambda s, decoration="# ": decoration + s,
        to_json=json.dumps,
        bool=bool,
        int=int,
    )
    return env


def haproxy_cfg(frontends: list[dict], **overrides) -> str:
    text = (SERVICE / "templates/haproxy.cfg.j2").read_text()
    return (
        environment()
        .from_string(text)
        .render(
            {
                **SERVICE_DEFAULTS,
                "ansible_managed": "Ansible managed",
                "stack_service_balancer_frontends": frontends,
                **overrides,
            }
        )
    )


def litellm_yaml(deployments: list[dict]) -> dict:
    text = (LITELLM / "templates/litellm.yaml.j2").read_text()
    rendered = (
        environment()
        .from_string(text)
        .render(
            {
                **LITELLM_DEFAULTS,
                "ansible_managed": "Ansible managed",
                "litellm_config_engines": deployments,
            }
        )
    )
    return yaml.safe_load(rendered)


def haproxy_check(text: str, tmp_path: Path) -> None:
    """`haproxy -c` on the file: HAProxy's own parser accepts it."""
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    path = tmp_path / "haproxy.cfg"
    path.write_text(text)
    result = subprocess.run(
        [haproxy, "-c", "-f", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def backends(text: str) -> dict[str, list[str]]:
    """backend name -> its `server` lines' name and address."""
    found: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("backend "):
            current = found.setdefault(line.split()[1], [])
        elif line.strip().startswith("server ") and current is not None:
            current.append(" ".join(line.split()[1:3]))
    return found


def p40_plan() -> list[dict]:
    return engine_plan(default_models(), "gpu", layout="auto", gpus=P40S)


def test_three_p40s_give_one_deployment_and_three_servers(tmp_path):
    engines = p40_plan()
    chat = [e for e in engines if e["kind"] == "chat"]
    assert [(e["program"], e["port"], e["gpu"]) for e in chat] == [
        ("llamacpp-chat-0", 8090, 0),
        ("llamacpp-chat-1", 8091, 1),
        ("llamacpp-chat-2", 8092, 2),
    ]
    frontends = balancer_plan(engines, PORT_BASE)
    config = litellm_yaml(frontends)
    assert check.problems(config) == []
    bases = {m["model_name"]: m["litellm_params"]["api_base"] for m in config["model_list"]}
    assert bases == {
        "gpt-3.5-turbo": f"http://127.0.0.1:{PORT_BASE}/v1",
        "text-embedding-ada-002": f"http://127.0.0.1:{PORT_BASE + 1}/v1",
    }
    text = haproxy_cfg(frontends)
    assert backends(text) == {
        "gpt-3.5-turbo": [
            "llamacpp-chat-0 127.0.0.1:8090",
            "llamacpp-chat-1 127.0.0.1:8091",
            "llamacpp-chat-2 127.0.0.1:8092",
        ],
        "text-embedding-ada-002": ["llamacpp-embeddings 127.0.0.1:8080"],
    }
    assert re.search(r"^\s+balance leastconn$", text, re.M)
    assert re.search(rf"^\s+bind 127\.0\.0\.1:{PORT_BASE}$", text, re.M)
    haproxy_check(text, tmp_path)


def test_the_directives_the_measurements_asked_for(tmp_path):
    rendered = haproxy_cfg(balancer_plan(p40_plan(), PORT_BASE))
    text = "\n".join(line for line in rendered.splitlines() if not line.lstrip().startswith("#"))
    # Without it the first streamed chunks waited (time to first token 44 -> 211 ms).
    assert "option http-no-delay" in text
    # A request is silent up to the proxy's timeout; the queue waits as long.
    assert "timeout server 610s" in text and "timeout queue 600s" in text
    assert "option httpchk GET /health" in text
    # A cancelled request (the client left) is aborted at the engine, which frees its slot.
    assert "option abortonclose" in text
    # A check failing under load must not cut streams; a ready engine needs no ramp.
    assert "shutdown-sessions" not in text and "slowstart" not in text
    assert "retry-on conn-failure empty-response" in text and "option redispatch 1" in text
    # The key never: checks need none, and requests carry LiteLLM's header.
    assert "Authorization" not in text and "LLAMA_API_KEY" not in text
    haproxy_check(rendered, tmp_path)


def test_a_fleet_gateway_balances_over_every_nodes_engines(tmp_path):
    nodes = {"10.0.0.11": 2, "10.0.0.12": 1}
    engines = []
    for address, replicas in nodes.items():
        engines += engine_plan(
            default_models(), "cpu", cpu_replicas=replicas, host=address, listen_host="0.0.0.0"
        )
    # One node's chat engine is sized smaller: the alias promises what every engine can serve.
    small = next(e for e in engines if e["host"] == "10.0.0.12" and e["kind"] == "chat")
    small["prompt_tokens"] = 1000
    frontends = balancer_plan(engines, PORT_BASE)
    chat = next(f for f in frontends if f["alias"] == "gpt-3.5-turbo")
    assert chat["prompt_tokens"] == 1000
    text = haproxy_cfg(frontends, stack_service_balancer_queue_at_balancer=True)
    assert backends(text)["gpt-3.5-turbo"] == [
        "10.0.0.11-llamacpp-chat-0 10.0.0.11:8090",
        "10.0.0.11-llamacpp-chat-1 10.0.0.11:8091",
        "10.0.0.12-llamacpp-chat 10.0.0.12:8090",
    ]
    # queue_at_balancer caps each engine at its slots.
    assert re.search(r"server 10\.0\.0\.12-llamacpp-chat 10\.0\.0\.12:8090 maxconn \d+", text)
    haproxy_check(text, tmp_path)


def test_the_balancer_series_are_a_route_behind_the_key():
    engines = p40_plan()
    routes = metrics_routes(engines, balancer_metrics_url="http://127.0.0.1:8299/metrics")
    assert routes[-1] == {
        "path": "/balancer/metrics",
        "target": "http://127.0.0.1:8299/metrics",
        "remote": False,
        "labels": {"program": "balancer"},
    }
    text = haproxy_cfg(balancer_plan(engines, PORT_BASE))
    assert "bind 127.0.0.1:8299" in text and "prometheus-exporter" in text
    assert "prometheus-exporter" not in haproxy_cfg(
        balancer_plan(engines, PORT_BASE), stack_service_metrics=False
    )


def test_a_frontend_on_an_engines_port_is_refused_naming_the_variable():
    with pytest.raises(AnsibleFilterError, match="localai_balancer_port_base=8090"):
        balancer_plan(p40_plan(), 8090)


def test_one_alias_for_a_chat_and_an_embedding_model_is_refused():
    engines = p40_plan()
    engines[-1] = dict(engines[-1], alias="gpt-3.5-turbo")
    with pytest.raises(AnsibleFilterError, match="give each model its own alias"):
        balancer_plan(engines, PORT_BASE)


def test_aliases_are_made_haproxy_names_and_clashes_are_refused(tmp_path):
    engines = p40_plan()
    engines[-1] = dict(engines[-1], alias="intfloat/multilingual e5")
    frontends = balancer_plan(engines, PORT_BASE)
    assert frontends[-1]["alias"] == "intfloat/multilingual e5"
    assert frontends[-1]["name"] == "intfloat_multilingual_e5"
    haproxy_check(haproxy_cfg(frontends), tmp_path)
    engines.append(dict(engines[-1], alias="intfloat_multilingual_e5", program="x", port=8085))
    with pytest.raises(AnsibleFilterError, match="rename one of the aliases"):
        balancer_plan(engines, PORT_BASE)


def programs(**overrides) -> str:
    text = (SERVICE / "templates/programs.conf.j2").read_text()
    env = environment()
    env.filters["quote"] = lambda s: s
    return env.from_string(text).render(
        {
            **container_interface(),
            **SERVICE_DEFAULTS,
            "ansible_managed": "Ansible managed",
            **overrides,
        }
    )


def test_the_balancer_runs_where_the_proxy_does():
    frontends = balancer_plan(p40_plan(), PORT_BASE)
    here = programs(stack_service_balancer_frontends=frontends)
    assert "[program:balancer]\ncommand=/usr/sbin/haproxy -W -db -f /config/haproxy.cfg" in here
    # A fleet node runs engines only: the gateway balances.
    node = programs(stack_service_balancer_frontends=frontends, stack_service_run_proxy=False)
    assert "[program:balancer]" not in node
