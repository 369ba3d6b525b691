"""Filters of the models role: progress lines for model downloads in flight.

The downloads run in the background (async, one job per file) and write <file>.partial on the
host; every poll reads the jobs' status (async_status) and the partial files' sizes (find) and
turns them into one line per download:

    download Llama-3-ELYZA-JP-8B-q8_0.gguf: 3.1 of 8.5 GB (36%), 92 MB/s, about 59 s left

The rate is that of the bytes written since the previous poll, so a stall shows at once; the
time left is what is missing at that rate. Sizes are decimal (1 GB = 10^9 bytes), as Hugging
Face and the README write them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

_UNITS = ((10**9, "GB"), (10**6, "MB"), (10**3, "kB"))


def models_duration(seconds: float) -> str:
    """Write a duration for people: "45 s", "6 min 10 s", "1 h 05 min" (seconds, >= 0)."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        minutes, rest = divmod(whole, 60)
        return f"{minutes} min {rest} s" if minutes < 10 and rest else f"{minutes} min"
    hours, rest = divmod(whole, 3600)
    return f"{hours} h {rest // 60:02d} min"


def _unit(size: float) -> tuple[int, str]:
    for scale, name in _UNITS:
        if size >= scale:
            return scale, name
    return 1, "bytes"


def _number(value: float, scale: int, like: float | None = None) -> str:
    """One decimal below 10 units ("3.1 GB", "8.5 GB"), none above ("92 MB", "144 MB").

    like: the figure whose precision this one takes ("3.1 of 8.5 GB", "60 of 144 MB").
    """
    decide = (value if like is None else like) / scale
    return f"{value / scale:.1f}" if decide < 10 and scale > 1 else f"{value / scale:.0f}"


def models_bytes(size: float) -> str:
    """Write a size in bytes for people: "8.5 GB", "144 MB", "12 kB", "512 bytes"."""
    scale, name = _unit(size)
    return f"{_number(size, scale)} {name}"


def _amount(have: int, expected: int | None) -> str:
    """Say "3.1 of 8.5 GB (36%)" in the unit of the expected size; "3.1 GB" when it is unknown."""
    if not expected:
        return models_bytes(have)
    scale, name = _unit(expected)
    percent = min(int(have * 100 / expected), 100)
    return f"{_number(have, scale, expected)} of {_number(expected, scale)} {name} ({percent}%)"


def _reason(status: Mapping[str, Any]) -> str:
    """The first line of the job's message, or "" when there is none.

    A module's uncaught exception (a read that timed out) comes without "msg": ansible-core 2.19
    moves it to "failed_when_suppressed_exception" when failed_when decides, without its text.
    """
    text = str(status.get("msg") or "").strip()
    return text.splitlines()[0] if text else ""


def _download_line(
    file: str,
    expected: int | None,
    have: int,
    *,
    before: int | None,
    interval: float,
    status: Mapping[str, Any] | None,
) -> str:
    """The line of one download: running (with rate and time left), done, or failed.

    have, before: bytes of the partial now and at the previous poll, interval seconds ago.
    """
    head = f"download {file}"
    if status and status.get("finished"):
        # localai_model_file's result always has the size; a failed attempt's has not (and the
        # poll's failed_when has reset "failed" to whether the poll itself failed).
        if status.get("failed") or "size" not in status:
            reason = _reason(status)
            because = f" ({reason})" if reason else ""
            return f"{head}: failed at {_amount(have, expected)}{because}, resumed after the polls"
        return f"{head}: done, {models_bytes(int(status['size']))}"
    parts = [_amount(have, expected)]
    if before is not None and interval > 0 and have >= before:
        rate = (have - before) / interval  # bytes per second
        if rate <= 0:
            parts.append(f"no data for {models_duration(interval)}")
        else:
            parts.append(f"{models_bytes(rate)}/s")
            if expected and expected > have:
                parts.append(f"about {models_duration((expected - have) / rate)} left")
    return f"{head}: " + ", ".join(parts)


def models_download_progress(
    downloads: Iterable[Mapping[str, Any]],
    partials: Iterable[Mapping[str, Any]],
    statuses: Iterable[Mapping[str, Any]],
    previous: Mapping[str, Any],
    now: float,
) -> dict[str, Any]:
    """The progress of every download at this poll, and what the next poll compares against.

    downloads: [{"file": "x.gguf", "size": expected bytes or None}, ...], the files being
      fetched (the inspection's files: the size comes from the lock file or the source's
      Content-Length).
    partials: ansible.builtin.find's "files" in the models dir, [{"path": ".../x.gguf.partial",
      "size": bytes}, ...]; a download whose partial is not there yet counts 0 bytes.
    statuses: the async_status results of the jobs, each with the job's launch result as "item"
      and the download as its "item" ({"item": {"item": {"file": ...}}, "finished": bool,
      "size": bytes on success, "msg" on failure}); a file without one counts as running.
    previous: what the last call returned, or at the first poll {"time": launch time,
      "bytes": {file: bytes of the partial at launch}}.
    now: the time of this poll, seconds (the controller's clock, as previous["time"]).

    Returns {"time": now, "bytes": {file: bytes now}, "lines": [one line per download]}.
    """
    sizes = {
        str(entry["path"]).rsplit("/", 1)[-1].removesuffix(".partial"): int(entry["size"])
        for entry in partials
        if str(entry["path"]).endswith(".partial")
    }
    by_file = {
        str(status["item"]["item"]["file"]): status
        for status in statuses
        if isinstance(status.get("item"), Mapping)
        and isinstance(status["item"].get("item"), Mapping)
    }
    before = dict(previous.get("bytes") or {})
    since = previous.get("time")
    interval = now - float(since) if since is not None else 0.0
    lines, now_bytes = [], {}
    for download in downloads:
        file = str(download["file"])
        have = sizes.get(file, 0)
        now_bytes[file] = have
        expected = int(download["size"]) if download.get("size") else None
        lines.append(
            _download_line(
                file,
                expected,
                have,
                before=before.get(file),
                interval=interval,
                status=by_file.get(file),
            )
        )
    return {"time": now, "bytes": now_bytes, "lines": lines}


class FilterModule:
    """Ansible entry point."""

    def filters(self) -> dict[str, object]:
        """Map filter names to functions."""
        return {
            "models_bytes": models_bytes,
            "models_download_progress": models_download_progress,
            "models_duration": models_duration,
        }
