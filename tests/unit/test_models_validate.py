"""Unit tests of models_validate: every bad input gives a message naming entry and field."""

from __future__ import annotations

import copy

import pytest
from ansible_collections.localai.llamacpp.plugins.plugin_utils.model_list import models_validate
from project import default_models

SHA = "9f04ec7a7590123b63a23b49c0bdd67d73115cb66a221fa59bd8f91d119e8ed8"


def good() -> list[dict]:
    """A valid list: one chat, one embedding."""
    return [
        {
            "name": "chat-model",
            "alias": "gpt-3.5-turbo",
            "kind": "chat",
            "file": "chat.gguf",
            "url": "https://huggingface.co/o/r/resolve/main/chat.gguf",
            "sha256": "huggingface",
            "ctx_size": 8192,
            "parallel": 8,
            "max_tokens": 512,
            "prompt_tokens": 512,
            "chat_template": "llama3",
            "flash_attn": "auto",
        },
        {
            "name": "embed-model",
            "alias": "text-embedding-ada-002",
            "kind": "embedding",
            "file": "embed.gguf",
            "src": "/srv/embed.gguf",
            "sha256": SHA,
        },
    ]


def test_valid_list_has_no_errors():
    assert models_validate(good()) == []


def test_default_models_are_valid():
    assert models_validate(default_models()) == []


@pytest.mark.parametrize(
    ("index", "change", "field"),
    [
        (0, {"kind": "vision"}, "'kind'"),
        (0, {"flash_attn": True}, "'flash_attn'"),
        (0, {"sha256": "abc"}, "'sha256'"),
        (0, {"sha256": SHA.upper()}, "'sha256'"),
        (0, {"ctx_size": 4096}, "'ctx_size'/'parallel'"),
        (0, {"parallel": 0}, "'parallel'"),
        (0, {"ctx_size": "8192"}, "'ctx_size'"),
        (0, {"url": None}, "'url' and 'src'"),
        (0, {"src": "/x.gguf"}, "'url' and 'src'"),
        (0, {"url": "ftp://x/y.gguf", "sha256": SHA}, "'url'"),
        (0, {"url": "http://x/y.gguf", "sha256": SHA}, "plain http"),
        (0, {"file": "../etc/passwd"}, "'file'"),
        (0, {"file": "model.bin"}, "'file'"),
        (0, {"name": "has space"}, "'name'"),
        (0, {"colour": "blue"}, "'colour' is unknown"),
        (0, {"pooling": "mean"}, "'pooling' does not apply"),
        (0, {"extra_args": ["--port", "1"]}, "'extra_args'"),
        (0, {"extra_args": "--foo"}, "'extra_args'"),
        (0, {"n_gpu_layers": -1}, "'n_gpu_layers'"),
        (0, {"jinja": "yes"}, "'jinja'"),
        (0, {"chat_template_file": 7}, "'chat_template_file'"),
        (0, {"chat_template_file": "t.jinja"}, "'chat_template' and 'chat_template_file'"),
        (0, {"chat_template": None, "chat_template_file": "t.jinja", "jinja": False}, "'jinja'"),
        (1, {"chat_template_file": "t.jinja"}, "'chat_template_file' does not apply"),
        (1, {"max_tokens": 10}, "'max_tokens' does not apply"),
        (1, {"pooling": "avg"}, "'pooling'"),
        (1, {"sha256": ""}, "'sha256' is missing"),
        (1, {"sha256": "huggingface"}, "not a Hugging Face URL"),
        (1, {"prompt_tokens": 1024, "ctx_size": 8192}, "'ubatch_size'"),
        (1, {"batch_size": 256, "ubatch_size": 512}, "'batch_size'"),
    ],
)
def test_bad_field_is_named(index, change, field):
    models = good()
    models[index].update(change)
    models[index] = {k: v for k, v in models[index].items() if v is not None}
    errors = models_validate(models)
    assert errors, change
    assert any(field in e and f"localai_models[{index}]" in e and "fix:" in e for e in errors), (
        errors
    )


@pytest.mark.parametrize("field", ["name", "alias", "kind", "file"])
def test_missing_required_field(field):
    models = good()
    del models[0][field]
    assert any(f"'{field}' is missing" in e for e in models_validate(models))


@pytest.mark.parametrize("field", ["alias", "name", "file"])
def test_duplicates_are_refused(field):
    models = good()
    models[1][field] = models[0][field]
    errors = models_validate(models)
    assert any(f"field '{field}'" in e and "already used by localai_models[0]" in e for e in errors)


def test_all_errors_are_reported_at_once():
    models = good()
    models[0]["kind"] = "x"
    models[1]["sha256"] = "nope"
    assert len(models_validate(models)) >= 2


@pytest.mark.parametrize("value", [None, [], "text", {"name": "x"}])
def test_not_a_list(value):
    assert models_validate(value)[0].startswith("localai_models is")


def test_entry_not_a_mapping():
    assert "entry is" in models_validate(["x"])[0]


def test_insecure_switches():
    models = good()
    models[1]["sha256"] = ""
    assert models_validate(models, allow_unverified=True) == []
    models = good()
    models[0]["url"] = "http://mirror.local/o/r/resolve/main/chat.gguf"
    assert models_validate(models, allow_http=True) == []


def test_context_rule_boundary():
    models = copy.deepcopy(good())
    models[0].update(ctx_size=1024 * 8, parallel=8, max_tokens=512, prompt_tokens=512)
    assert models_validate(models) == []
    models[0]["ctx_size"] = 1024 * 8 - 1
    errors = models_validate(models)
    assert any("raise ctx_size to at least 8192" in e for e in errors), errors
