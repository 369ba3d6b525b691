"""LiteLLM custom auth for localai-llamacpp: one shared key, and HTTP 401 when it is wrong.

Why this file exists: LiteLLM 1.108.0 without a database answers a wrong key with HTTP 400
("No connected db.") and a missing key with HTTP 500, because after the master-key comparison it
falls through to a database lookup. Clients (and the OpenAI SDK's retry logic) need 401. The
proxy loads this module from the config directory (`general_settings.custom_auth:
localai_auth.user_api_key_auth`); LiteLLM turns an exception raised here into HTTP 401.

The key is read from the environment (LITELLM_MASTER_KEY, set from the root-only env file) on
every request, never logged. With no key configured every request is refused (fail closed).
"""

from __future__ import annotations

import hashlib
import hmac
import os

from fastapi import Request
from litellm.proxy._types import LitellmUserRoles, ProxyErrorTypes, ProxyException, UserAPIKeyAuth

_ENV_NAME = "LITELLM_MASTER_KEY"


def _digest(value: str) -> bytes:
    """Hash before comparing so compare_digest sees equal lengths (no length oracle)."""
    return hashlib.sha256(value.encode("utf-8")).digest()


def _unauthorized(message: str) -> ProxyException:
    """Build the 401 LiteLLM sends back as an OpenAI-style error body."""
    return ProxyException(
        message=message,
        type=ProxyErrorTypes.auth_error,
        param="api_key",
        code=401,
    )


def _strip_bearer(api_key: str | None) -> str:
    """LiteLLM usually strips 'Bearer '; accept both forms so no header shape slips through."""
    key = (api_key or "").strip()
    if key.lower().startswith("bearer "):
        key = key[len("bearer ") :].strip()
    return key


async def user_api_key_auth(request: Request, api_key: str) -> UserAPIKeyAuth:
    """Accept exactly the configured master key; anything else is HTTP 401."""
    del request  # the decision depends on the key only
    expected = os.environ.get(_ENV_NAME, "")
    if not expected:
        raise _unauthorized(f"Authentication is not configured ({_ENV_NAME} is empty).")
    presented = _strip_bearer(api_key)
    if not presented:
        raise _unauthorized("Missing API key: send 'Authorization: Bearer <key>'.")
    if not hmac.compare_digest(_digest(presented), _digest(expected)):
        raise _unauthorized("Invalid API key.")
    return UserAPIKeyAuth(api_key=expected, user_role=LitellmUserRoles.PROXY_ADMIN)
