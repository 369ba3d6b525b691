"""Unit tests of the models role's download progress lines (bytes, rate, time left)."""

from __future__ import annotations

import pytest
from project import load

f = load("models_progress", "roles/models/filter_plugins/models_progress.py")

GB = 10**9
CHAT = {"file": "Llama-3-ELYZA-JP-8B-Q8_0.gguf", "size": 8_540_770_592}
EMBED = {"file": "e5-small.gguf", "size": 144_000_000}


def partial(file: str, size: int) -> dict:
    """One entry of ansible.builtin.find's files, as the poll's find returns it."""
    return {"path": f"/opt/localai-llamacpp/models/{file}.partial", "size": size}


def status(file: str, **result) -> dict:
    """An async_status loop result for the download of file (launch result as item)."""
    return {"item": {"ansible_job_id": "j1", "item": {"file": file}}, **result}


@pytest.mark.parametrize(
    ("size", "text"),
    [(512, "512 bytes"), (12_300, "12 kB"), (9_000_000, "9.0 MB"), (144_000_000, "144 MB"),
     (8_540_770_592, "8.5 GB"), (24 * GB, "24 GB")],
)  # fmt: skip
def test_bytes_are_decimal_with_one_decimal_below_ten(size, text):
    assert f.models_bytes(size) == text


def test_running_download_has_share_rate_and_time_left():
    previous = {"time": 100.0, "bytes": {CHAT["file"]: 2_180_000_000}}
    progress = f.models_download_progress(
        [CHAT], [partial(CHAT["file"], 3_100_000_000)], [status(CHAT["file"], finished=False)],
        previous, 110.0,
    )  # fmt: skip
    # 920 MB in 10 s; 5.44 GB left at 92 MB/s is 59 s.
    assert progress["lines"] == [
        "download Llama-3-ELYZA-JP-8B-Q8_0.gguf: 3.1 of 8.5 GB (36%), 92 MB/s, about 59 s left"
    ]
    assert progress == {
        "time": 110.0,
        "bytes": {CHAT["file"]: 3_100_000_000},
        "lines": progress["lines"],
    }


def test_the_next_poll_measures_from_the_last_one():
    first = f.models_download_progress(
        [EMBED], [partial(EMBED["file"], 40_000_000)], [], {"time": 0, "bytes": {}}, 10.0
    )
    second = f.models_download_progress(
        [EMBED], [partial(EMBED["file"], 60_000_000)], [], first, 20.0
    )
    assert second["lines"] == [
        "download e5-small.gguf: 60 of 144 MB (41%), 2.0 MB/s, about 42 s left"
    ]


def test_a_stalled_download_says_so():
    previous = {"time": 0.0, "bytes": {EMBED["file"]: 50_000_000}}
    progress = f.models_download_progress(
        [EMBED], [partial(EMBED["file"], 50_000_000)], [], previous, 10
    )
    assert progress["lines"] == ["download e5-small.gguf: 50 of 144 MB (34%), no data for 10 s"]


def test_unknown_size_and_a_partial_not_there_yet():
    unknown = {"file": "x.gguf", "size": None}
    progress = f.models_download_progress(
        [unknown, EMBED], [partial("x.gguf", 3_000_000), {"path": "/m/other.gguf", "size": 1}], [],
        {"time": 0, "bytes": {"x.gguf": 1_000_000}}, 4,
    )  # fmt: skip
    assert progress["lines"] == [
        "download x.gguf: 3.0 MB, 500 kB/s",
        "download e5-small.gguf: 0 of 144 MB (0%)",
    ]


def test_a_restarted_download_shows_no_rate():
    """A server that ignores Range sends the file again from byte 0: the partial shrinks."""
    previous = {"time": 0, "bytes": {EMBED["file"]: 90_000_000}}
    progress = f.models_download_progress(
        [EMBED], [partial(EMBED["file"], 8_000_000)], [], previous, 10
    )
    assert progress["lines"] == ["download e5-small.gguf: 8 of 144 MB (5%)"]


def test_finished_and_failed_downloads():
    done = status(EMBED["file"], finished=True, changed=True, size=144_000_000)
    # The module's own failure has a message; an uncaught exception under failed_when has none,
    # and failed_when has set "failed" to false: the missing size tells.
    failed = status(CHAT["file"], finished=True, failed=False)
    progress = f.models_download_progress(
        [CHAT, EMBED],
        [partial(CHAT["file"], 3_100_000_000), partial(EMBED["file"], 144_000_000)],
        [failed, done], {"time": 0, "bytes": {}}, 10,
    )  # fmt: skip
    assert progress["lines"] == [
        "download Llama-3-ELYZA-JP-8B-Q8_0.gguf: failed at 3.1 of 8.5 GB (36%),"
        " resumed after the polls",
        "download e5-small.gguf: done, 144 MB",
    ]
    with_message = status(
        CHAT["file"], finished=True, failed=False, msg="download failed: HTTP 503\nmore"
    )
    line = f.models_download_progress([CHAT], [], [with_message], {}, 1)["lines"][0]
    assert line == (
        "download Llama-3-ELYZA-JP-8B-Q8_0.gguf: failed at 0.0 of 8.5 GB (0%) "
        "(download failed: HTTP 503), resumed after the polls"
    )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(59.4, "59 s"), (130, "2 min 10 s"), (1800, "30 min"), (5400, "1 h 30 min")],
)
def test_duration(seconds, text):
    assert f.models_duration(seconds) == text
