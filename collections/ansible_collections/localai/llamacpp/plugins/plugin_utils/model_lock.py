"""The lock file and the placed models: what the models role records after a run."""

from __future__ import annotations

from typing import Any


def models_lock(
    lock: dict[str, Any], resolved: list[dict[str, Any]], placed: list[dict[str, Any]]
) -> dict[str, Any]:
    """Return the lock file content: learned entries plus trust-on-first-use hashes.

    `lock` is what localai_models_resolve returned (old entries plus checksums learned from the
    source); `placed` is models_placed of one host. A model that had no known checksum
    (origin 'unverified') is recorded with the hash of the bytes actually placed, so every
    later run and every other host must get the same bytes.
    """
    result = {k: dict(v) for k, v in (lock or {}).items()}
    hashes = {p["file"]: p.get("sha256", "") for p in placed or []}
    for item in resolved or []:
        if item.get("origin") == "unverified" and hashes.get(item["file"]):
            result[item["file"]] = {
                "sha256": hashes[item["file"]],
                "source": item.get("url") or item.get("src"),
                "size": item.get("size"),
                "origin": "UNVERIFIED: hash of the first download (trust on first use)",
            }
    return {"models": dict(sorted(result.items()))}


def models_placed(
    files: list[dict[str, Any]], verified: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Return models_placed: {name, file, path, sha256} for every model, in list order.

    `files` is the host inspection (sha256 of what was already in place); `verified` the
    results of the verify loop (sha256 of what was just placed), which win.
    """
    fresh = {
        r["item"]["file"]: r.get("sha256", "")
        for r in verified or []
        if isinstance(r, dict) and isinstance(r.get("item"), dict)
    }
    return [
        {
            "name": f["name"],
            "file": f["file"],
            "path": f["path"],
            "sha256": fresh.get(f["file"]) or f.get("sha256", ""),
        }
        for f in files or []
    ]
