"""litellm.yaml as rendered from an engine plan passes the role's own check; bad ones do not."""

from __future__ import annotations

import json
from pathlib import Path

import jinja2
import pytest
import yaml
from ansible_collections.localai.llamacpp.plugins.filter.metrics import metrics_routes
from ansible_collections.localai.llamacpp.plugins.plugin_utils.engine_plan import engine_plan
from project import default_models, load

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "litellm_config"


check = load("check_litellm_config", "roles/litellm_config/files/check_litellm_config.py")
DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
# A GPU host as nvidia_toolkit reports it: the default chat model sizes itself from its memory.
ONE_GPU = [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_mib": 81559}]


def render(engines: list[dict], **overrides) -> str:
    """Render the template the way Ansible does (the filters it uses, stubbed)."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters.update(
        comment=lambda s: "#\n# " + s + "\n#",
        to_json=json.dumps,
        bool=bool,
        int=int,
    )
    template = env.from_string((ROLE / "templates" / "litellm.yaml.j2").read_text())
    return template.render(
        {
            **DEFAULTS,
            "ansible_managed": "Ansible managed",
            "litellm_config_engines": engines,
            **overrides,
        }
    )


def test_default_models_render_a_valid_config():
    engines = engine_plan(default_models(), "gpu", gpus=ONE_GPU)
    config = yaml.safe_load(render(engines))
    assert check.problems(config) == []
    by_alias = {m["model_name"]: m for m in config["model_list"]}
    chat, embed = by_alias["gpt-3.5-turbo"], by_alias["text-embedding-ada-002"]
    assert chat["litellm_params"]["model"] == "openai/Llama-3-ELYZA-JP-8B"
    assert chat["litellm_params"]["api_base"] == "http://127.0.0.1:8090/v1"
    assert embed["litellm_params"]["api_base"] == "http://127.0.0.1:8080/v1"
    # The models' own limits (prompt_tokens, max_tokens), not the hosted models' numbers.
    free = {
        "input_cost_per_token": 0,
        "output_cost_per_token": 0,
        "cache_creation_input_token_cost": 0,
        "cache_read_input_token_cost": 0,
    }
    assert embed["model_info"] == {"mode": "embedding", "max_input_tokens": 512, **free}
    assert chat["model_info"] == {
        "mode": "chat",
        "max_input_tokens": 3072,
        "max_output_tokens": 1024,
        **free,
    }
    assert config["general_settings"] == {
        "master_key": "os.environ/LITELLM_MASTER_KEY",
        "custom_auth": "localai_auth.user_api_key_auth",
        "cancel_on_disconnect": True,
    }
    # Metrics on by default, behind the key; the request log off by default.
    assert config["litellm_settings"]["callbacks"] == ["localai_hooks.request_rules", "prometheus"]
    assert config["litellm_settings"]["require_auth_for_metrics_endpoint"] is True
    assert "hashed_api_key" in config["litellm_settings"]["prometheus_exclude_labels"]
    assert config["litellm_settings"]["drop_params"] is True
    # Else a failing Hugging Face tokenizer load, and a WARNING, per streamed request.
    assert config["litellm_settings"]["disable_hf_tokenizer_download"] is True


def test_replicas_share_one_alias():
    engines = engine_plan(default_models(), "gpu", gpus=ONE_GPU)
    engines.append(dict(engines[0], port=8091, program="llamacpp-chat-2"))
    config = yaml.safe_load(render(engines))
    assert [m["model_name"] for m in config["model_list"]].count("gpt-3.5-turbo") == 2


def test_metrics_routes_pass_every_engine_through_behind_the_key():
    engines = engine_plan(default_models(), "gpu", gpus=ONE_GPU)
    routes = metrics_routes(engines, "http://127.0.0.1:9400/metrics")
    config = yaml.safe_load(render(engines, litellm_config_metrics_routes=routes))
    assert check.problems(config) == []
    passed = {r["path"]: r for r in config["general_settings"]["pass_through_endpoints"]}
    assert passed == {
        "/engines/llamacpp-chat/metrics": {
            "path": "/engines/llamacpp-chat/metrics",
            "target": "http://127.0.0.1:8090/metrics",
            "auth": True,
            "methods": ["GET"],
        },
        "/engines/llamacpp-embeddings/metrics": {
            "path": "/engines/llamacpp-embeddings/metrics",
            "target": "http://127.0.0.1:8080/metrics",
            "auth": True,
            "methods": ["GET"],
        },
        "/gpus/metrics": {
            "path": "/gpus/metrics",
            "target": "http://127.0.0.1:9400/metrics",
            "auth": True,
            "methods": ["GET"],
        },
    }


def test_metrics_off_serves_none():
    engines = engine_plan(default_models(), "cpu")
    routes = metrics_routes(engines)
    config = yaml.safe_load(
        render(engines, litellm_config_metrics=False, litellm_config_metrics_routes=routes)
    )
    assert config["litellm_settings"]["callbacks"] == ["localai_hooks.request_rules"]
    assert "pass_through_endpoints" not in config["general_settings"]
    assert "require_auth_for_metrics_endpoint" not in config["litellm_settings"]


def test_fleet_gateway_routes_carry_the_engines_key():
    node_engines = [
        dict(e, host=host)
        for host in ("10.0.0.11", "10.0.0.12")
        for e in engine_plan(default_models(), "cpu")
    ]
    routes = metrics_routes(node_engines)
    config = yaml.safe_load(
        render(
            node_engines,
            litellm_config_metrics_routes=routes,
            litellm_config_engine_api_key="engine-key-0123456789",
        )
    )
    passed = config["general_settings"]["pass_through_endpoints"]
    assert {r["path"] for r in passed} == {
        f"/nodes/{host}/engines/{program}/metrics"
        for host in ("10.0.0.11", "10.0.0.12")
        for program in ("llamacpp-chat", "llamacpp-embeddings")
    }
    # The engines' key by reference to the env file, never the key itself.
    assert all(r["headers"] == {"Authorization": "Bearer os.environ/LLAMA_API_KEY"} for r in passed)
    assert "engine-key-0123456789" not in render(
        node_engines,
        litellm_config_metrics_routes=routes,
        litellm_config_engine_api_key="engine-key-0123456789",
    )


def test_request_log_knob_adds_its_callback():
    engines = engine_plan(default_models(), "cpu")
    config = yaml.safe_load(render(engines, litellm_config_request_log=True))
    assert "localai_request_log.request_log" in config["litellm_settings"]["callbacks"]


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda c: c.update(model_list=[]), "model_list"),
        (lambda c: c["general_settings"].update(master_key="sk-literal"), "master_key"),
        (lambda c: c["general_settings"].pop("custom_auth"), "custom_auth"),
        (lambda c: c["litellm_settings"].pop("callbacks"), "localai_hooks"),
        (lambda c: c["model_list"][0]["litellm_params"].pop("api_base"), "api_base"),
        (
            lambda c: c["litellm_settings"].pop("require_auth_for_metrics_endpoint"),
            "require_auth_for_metrics_endpoint",
        ),
        (
            lambda c: c["general_settings"].update(
                pass_through_endpoints=[{"path": "/engines/x/metrics", "target": "http://a/"}]
            ),
            "auth: true",
        ),
    ],
)
def test_check_refuses_bad_configs(mutate, problem):
    config = yaml.safe_load(render(engine_plan(default_models(), "cpu")))
    mutate(config)
    assert any(problem in p for p in check.problems(config))


def test_check_main_on_files(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(render(engine_plan(default_models(), "cpu")))
    assert check.main(str(good)) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_list: [unclosed\n")
    assert check.main(str(bad)) == 1


# The custom auth module (401 on a wrong or missing key) is tested end to end against the real
# LiteLLM in molecule/default/tests/test_endpoint.py::test_wrong_or_missing_key_gets_401.
