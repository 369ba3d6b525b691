"""Shared helpers of the models role's modules: hashing, checksum stamps, Hugging Face metadata.

Why a stamp: hashing an 8 GB model on every run costs about a minute per file. The stamp
`<file>.sha256` is a `sha256sum`-format line (so `sha256sum -c` works by hand) whose own mtime
is set to the model's mtime when it is written. A stamp counts only while both mtimes are equal:
any write to the model (truncation, a partial copy over it, an edit) moves the model's mtime and
forces a full re-hash. Corruption that leaves the mtime alone (bit rot, `touch -r`) is caught by
`models_verify_existing: true`, which re-hashes every file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any
from urllib.error import HTTPError
from urllib.parse import quote, urlsplit

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
HF_RESOLVE_RE = re.compile(
    r"^(?P<scheme>https?)://(?P<host>[^/]+)/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"
)
CHUNK = 8 * 1024 * 1024


def sha256_file(path: str) -> str:
    """Hash a file in chunks (models are larger than memory on small hosts)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def stamp_path(path: str) -> str:
    """The checksum stamp next to a model file."""
    return path + ".sha256"


def read_stamp(path: str) -> str | None:
    """Return the stamped sha256 if the stamp is current for `path`, else None."""
    stamp = stamp_path(path)
    try:
        model_stat, stamp_stat = os.stat(path), os.stat(stamp)
        with open(stamp, encoding="ascii") as handle:
            line = handle.readline().strip()
    except (OSError, UnicodeDecodeError):
        return None
    if model_stat.st_mtime_ns != stamp_stat.st_mtime_ns:
        return None
    parts = line.split()
    if len(parts) != 2 or not SHA256_RE.match(parts[0]):
        return None
    if parts[1].lstrip("*") != os.path.basename(path):
        return None
    return parts[0]


def write_stamp(path: str, sha256: str) -> bool:
    """Write the stamp for `path` and tie it to the model's mtime; True when it changed."""
    if read_stamp(path) == sha256:
        return False
    stamp = stamp_path(path)
    tmp = stamp + ".tmp"
    with open(tmp, "w", encoding="ascii") as handle:
        handle.write(f"{sha256}  {os.path.basename(path)}\n")
    os.chmod(tmp, 0o644)
    model_stat = os.stat(path)
    os.utime(tmp, ns=(model_stat.st_atime_ns, model_stat.st_mtime_ns))
    os.replace(tmp, stamp)
    return True


def clean_etag(value: str | None) -> str | None:
    """X-Linked-Etag comes quoted, sometimes weak (W/"..."); return a sha256 or None."""
    if not value:
        return None
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    value = value.strip('"').lower()
    return value if SHA256_RE.match(value) else None


def _header(headers: Any, name: str) -> str | None:
    """Case-insensitive header read from an HTTPMessage or a dict."""
    if headers is None:
        return None
    getter = getattr(headers, "get", None)
    if getter is None:
        return None
    value = getter(name)
    if value is None and isinstance(headers, dict):
        lowered = {k.lower(): v for k, v in headers.items()}
        value = lowered.get(name.lower())
    return value


def head_without_redirect(open_url: Any, url: str, timeout: int) -> tuple[int, Any]:
    """HEAD a URL without following redirects: Hugging Face puts the sha256 on the 302."""
    try:
        response = open_url(url, method="HEAD", follow_redirects="none", timeout=timeout)
        return response.getcode(), response.headers
    except HTTPError as err:
        return err.code, err.headers


def learn_sha256(open_url: Any, url: str, timeout: int) -> dict[str, Any]:
    """Ask the source which sha256 it publishes for `url`.

    1. HEAD on the resolve/ URL: Hugging Face answers (302 or 200) with X-Linked-Etag (the LFS
       object id, which is the file's sha256) and X-Linked-Size.
    2. Else its model API, /api/models/OWNER/REPO/tree/REV/DIR, whose entries carry lfs.oid.
    Returns {sha256, size, how} with sha256 None when the source publishes nothing.
    """
    result: dict[str, Any] = {"sha256": None, "size": None, "how": None, "error": None}
    status, headers = head_without_redirect(open_url, url, timeout)
    if status >= 400:
        result["error"] = f"HEAD {url} answered HTTP {status}"
        return result
    sha = clean_etag(_header(headers, "X-Linked-Etag"))
    size = _header(headers, "X-Linked-Size")
    if sha:
        result.update(sha256=sha, size=int(size) if size and size.isdigit() else None)
        result["how"] = "X-Linked-Etag"
        return result
    match = HF_RESOLVE_RE.match(url)
    if not match:
        return result
    return _learn_from_api(open_url, match.groupdict(), timeout, result)


def _learn_from_api(
    open_url: Any, parts: dict[str, str], timeout: int, result: dict[str, Any]
) -> dict[str, Any]:
    """Second way: the model API's tree listing (lfs.oid per file)."""
    path = parts["path"].split("?", 1)[0]
    directory = os.path.dirname(path)
    api = (
        f"{parts['scheme']}://{parts['host']}/api/models/{parts['repo']}/tree/"
        f"{quote(parts['rev'], safe='')}" + (f"/{quote(directory)}" if directory else "")
    )
    try:
        response = open_url(api, method="GET", timeout=timeout)
        listing = json.loads(response.read().decode("utf-8"))
    except (HTTPError, OSError, ValueError) as err:
        result["error"] = f"GET {api}: {err}"
        return result
    for item in listing if isinstance(listing, list) else []:
        lfs = item.get("lfs") if isinstance(item, dict) else None
        if item.get("path") == path and isinstance(lfs, dict):
            sha = clean_etag(str(lfs.get("oid", "")))
            if sha:
                result.update(sha256=sha, size=lfs.get("size"), how="model API lfs.oid")
    return result


def url_host(url: str) -> str:
    """Host part of a URL, for messages."""
    return urlsplit(url).netloc
