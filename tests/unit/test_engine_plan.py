"""Unit tests of engine_plan: the engines, their ports and llama-server arguments."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.localai.llamacpp.plugins.plugin_utils.engine_plan import engine_plan
from ansible_collections.localai.llamacpp.plugins.plugin_utils.model_list import chat_template_path
from ansible_collections.localai.llamacpp.plugins.plugin_utils.model_lock import (
    models_lock,
    models_placed,
)

SHA = "9f04ec7a7590123b63a23b49c0bdd67d73115cb66a221fa59bd8f91d119e8ed8"


def models() -> list[dict]:
    """The seed's pair of models, shaped like group_vars."""
    return [
        {
            "name": "Llama-3-ELYZA-JP-8B",
            "alias": "gpt-3.5-turbo",
            "kind": "chat",
            "file": "Llama-3-ELYZA-JP-8B-Q8_0.gguf",
            "url": "https://huggingface.co/mmnga/Llama-3-ELYZA-JP-8B-gguf/resolve/main/Llama-3-ELYZA-JP-8B-Q8_0.gguf",
            "sha256": "huggingface",
            "ctx_size": 8192,
            "parallel": 8,
            "max_tokens": 512,
            "prompt_tokens": 512,
            "chat_template": "llama3",
            "flash_attn": "on",
            "n_gpu_layers": 33,
        },
        {
            "name": "multilingual-e5-small",
            "alias": "text-embedding-ada-002",
            "kind": "embedding",
            "file": "multilingual-e5-small-q8_0.gguf",
            "src": "/srv/e5.gguf",
            "sha256": SHA,
        },
    ]


def flag(args: list[str], name: str) -> str:
    """Value following a flag."""
    return args[args.index(name) + 1]


def test_engine_dicts_follow_the_contract():
    chat, embed = engine_plan(models(), "gpu")
    assert set(chat) == {
        "program", "kind", "model", "alias", "host", "port", "model_path", "args", "gpu",
        "prompt_tokens", "max_tokens", "parallel", "ctx_size", "gpu_memory_gb", "sizing",
        "engine", "command", "tokenizer_file",
    }  # fmt: skip
    assert chat["engine"] == embed["engine"] == "llama-server"
    assert chat["command"] == "/opt/localai/bin/llama-server"
    assert chat["tokenizer_file"] is None
    assert (chat["prompt_tokens"], chat["max_tokens"]) == (512, 512)
    assert (embed["prompt_tokens"], embed["max_tokens"]) == (512, None)
    assert chat["program"] == "llamacpp-chat" and embed["program"] == "llamacpp-embeddings"
    assert (chat["port"], embed["port"]) == (8090, 8080)
    assert chat["host"] == embed["host"] == "127.0.0.1"
    assert chat["model_path"] == "/models/Llama-3-ELYZA-JP-8B-Q8_0.gguf"
    assert chat["gpu"] is None and embed["gpu"] is None
    assert all(isinstance(a, str) for e in (chat, embed) for a in e["args"])


def test_chat_args():
    args = engine_plan(models(), "gpu")[0]["args"]
    assert flag(args, "--model") == "/models/Llama-3-ELYZA-JP-8B-Q8_0.gguf"
    assert flag(args, "--alias") == "Llama-3-ELYZA-JP-8B"
    assert flag(args, "--host") == "127.0.0.1" and flag(args, "--port") == "8090"
    assert flag(args, "--ctx-size") == "8192" and flag(args, "--parallel") == "8"
    assert flag(args, "--n-gpu-layers") == "33"
    assert flag(args, "--flash-attn") == "on"
    assert flag(args, "--chat-template") == "llama3"
    assert flag(args, "--n-predict") == "512"
    assert "--metrics" in args and "--embeddings" not in args


def test_embedding_args():
    args = engine_plan(models(), "gpu")[1]["args"]
    assert "--embeddings" in args and flag(args, "--pooling") == "mean"
    assert flag(args, "--flash-attn") == "auto"
    assert "--n-predict" not in args and "--chat-template" not in args


def test_cpu_mode_offloads_nothing():
    for engine in engine_plan(models(), "cpu"):
        assert flag(engine["args"], "--n-gpu-layers") == "0"


def test_optional_flags():
    m = models()
    m[0].update(jinja=True, batch_size=1024, ubatch_size=256, extra_args=["--threads-http", "8"])
    args = engine_plan(m, "gpu")[0]["args"]
    assert "--jinja" in args and flag(args, "--batch-size") == "1024"
    assert flag(args, "--ubatch-size") == "256" and args[-2:] == ["--threads-http", "8"]


def test_ports_and_programs_count_up_per_kind():
    m = models()
    m.append(dict(m[0], name="Second-Chat", alias="gpt-4", file="second.gguf"))
    plan = engine_plan(m, "replicas", chat_port_base=9000)
    assert [e["port"] for e in plan] == [9000, 8080, 9001]
    assert plan[2]["program"] == "llamacpp-chat-second-chat"


def test_port_collision_is_refused():
    m = models()
    with pytest.raises(AnsibleFilterError, match="share port"):
        engine_plan(m, "gpu", chat_port_base=8080, embedding_port_base=8080)


def test_bad_gpu_mode_and_bad_models():
    with pytest.raises(AnsibleFilterError, match="gpu_mode"):
        engine_plan(models(), "tensor")
    m = models()
    m[0]["kind"] = "x"
    with pytest.raises(AnsibleFilterError, match="invalid model list"):
        engine_plan(m, "gpu")


def test_placed_and_lock_helpers():
    files = [{"name": "a", "file": "a.gguf", "path": "/m/a.gguf", "sha256": "old"}]
    verified = [{"item": {"file": "a.gguf"}, "sha256": "new"}]
    assert models_placed(files, verified)[0]["sha256"] == "new"
    assert models_placed(files, [])[0]["sha256"] == "old"
    resolved = [{"file": "a.gguf", "origin": "unverified", "url": "https://x/a.gguf", "size": 3}]
    lock = models_lock({}, resolved, [{"file": "a.gguf", "sha256": "abc"}])
    assert lock["models"]["a.gguf"]["sha256"] == "abc"
    assert lock["models"]["a.gguf"]["origin"].startswith("UNVERIFIED")


def test_named_chat_template_turns_jinja_off():
    """A built-in template name only works on the non-Jinja path; Jinja would render the name."""
    args = engine_plan(models(), "cpu")[0]["args"]
    assert "--no-jinja" in args and "--jinja" not in args
    assert flag(args, "--chat-template") == "llama3"


def test_without_a_named_template_the_files_own_runs_on_jinja():
    """The Jinja path with the GGUF's template is the one that answers tools with tool_calls."""
    chat = {k: v for k, v in models()[0].items() if k != "chat_template"}
    args = engine_plan([chat], "cpu")[0]["args"]
    assert "--jinja" in args and "--no-jinja" not in args and "--chat-template" not in args


def test_chat_template_file_is_placed_beside_the_model_and_runs_on_jinja():
    """A template file replaces the file's own template, on the Jinja path (tools need it)."""
    chat = {k: v for k, v in models()[0].items() if k != "chat_template"}
    chat["chat_template_file"] = "templates/tool-use.jinja"
    args = engine_plan([chat], "cpu")[0]["args"]
    assert "--jinja" in args and "--no-jinja" not in args and "--chat-template" not in args
    assert flag(args, "--chat-template-file") == "/models/Llama-3-ELYZA-JP-8B-Q8_0.jinja"
    assert chat_template_path("ELYZA-JP-8B-Q8_0.gguf") == "ELYZA-JP-8B-Q8_0.jinja"


def test_explicit_jinja_with_template_is_kept():
    chat = {**models()[0], "chat_template": "{{ messages }}", "jinja": True}
    args = engine_plan([chat], "cpu")[0]["args"]
    assert "--jinja" in args and "--no-jinja" not in args
