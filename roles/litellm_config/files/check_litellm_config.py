"""Validate a rendered litellm.yaml before it replaces the live one (used as `validate:`).

Why: a broken config would stop the proxy at the next restart; this catches it while the old
config is still in place. It also refuses a config that carries a literal key (the key belongs
in the root-only env file, never in this world-readable file), and one whose metrics routes
would answer without the key.
"""

from __future__ import annotations

import sys

import yaml


def problems(config: object) -> list[str]:
    """Return what is wrong with the parsed config (empty list: fine)."""
    if not isinstance(config, dict):
        return ["the file is not a YAML mapping"]
    found = []
    models = config.get("model_list")
    if not isinstance(models, list) or not models:
        found.append("model_list is missing or empty")
    for index, entry in enumerate(models or []):
        params = entry.get("litellm_params") if isinstance(entry, dict) else None
        if not isinstance(params, dict) or not entry.get("model_name"):
            found.append(f"model_list[{index}] lacks model_name or litellm_params")
        elif not str(params.get("model", "")).startswith("openai/") or not params.get("api_base"):
            found.append(f"model_list[{index}] lacks an openai/ model or an api_base")
    general = config.get("general_settings") or {}
    if general.get("master_key") != "os.environ/LITELLM_MASTER_KEY":
        found.append("general_settings.master_key must be os.environ/LITELLM_MASTER_KEY")
    if not general.get("custom_auth"):
        found.append("general_settings.custom_auth is missing (wrong keys would not get 401)")
    callbacks = (config.get("litellm_settings") or {}).get("callbacks") or []
    if "localai_hooks.request_rules" not in callbacks:
        found.append(
            "litellm_settings.callbacks lacks localai_hooks.request_rules (token ids, too long "
            "inputs and max_tokens would reach the engines unchecked)"
        )
    settings = config.get("litellm_settings") or {}
    if "prometheus" in callbacks and settings.get("require_auth_for_metrics_endpoint") is not True:
        found.append(
            "litellm_settings.require_auth_for_metrics_endpoint must be true with the prometheus "
            "callback (/metrics would answer without the key)"
        )
    for index, route in enumerate(general.get("pass_through_endpoints") or []):
        if not isinstance(route, dict) or route.get("auth") is not True:
            found.append(
                f"general_settings.pass_through_endpoints[{index}] must have auth: true (it would "
                "answer without the key)"
            )
    return found


def main(path: str) -> int:
    """Exit 0 when the config is valid; print the problems otherwise."""
    with open(path, encoding="utf-8") as handle:
        try:
            config = yaml.safe_load(handle)
        except yaml.YAMLError as err:
            print(f"{path}: not valid YAML: {err}", file=sys.stderr)
            return 1
    found = problems(config)
    for problem in found:
        print(f"{path}: {problem}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
