"""Unit tests of the stack_image role's build progress line, read from BuildKit's plain output."""

from __future__ import annotations

import re

import pytest
from project import load

f = load("stack_image_build_progress", "roles/stack_image/filter_plugins/build_progress.py")

# What `grep -E -o "$__stack_image_build_marks"` keeps of a BuildKit plain log (Docker 20.10):
# a step header repeated when its output resumes after another step's, steps of two stages at
# once, CMake's Makefile progress inside the compile step.
MARKS = """\
#1 [internal]
#1 DONE 0.1s
#4 [builder 1/6]
#4 DONE 0.1s
#6 [builder 6/6]
#6 10.00 [  0%] Building
#5 [venv 3/4]
#6 [builder 6/6]
#6 20.00 [ 10%] Building
#5 DONE 12.3s
#6 110.00 [ 55%] Built
"""


def test_duration_reads_like_people_write_it():
    assert [f.stack_image_duration(s) for s in (0, 59.4, 61, 370, 600, 3599, 3600, 3960)] == [
        "0 s",
        "59 s",
        "1 min 1 s",
        "6 min 10 s",
        "10 min",
        "59 min",
        "1 h 00 min",
        "1 h 06 min",
    ]


def test_compile_step_with_percentage_and_time_left():
    # 0% at 10 s and 55% at 110 s into the step: 0.55 %/s, so the 45% left take 82 s.
    line = f.stack_image_build_progress(MARKS, 370)
    assert line == "image build: 6 min 10 s, step [builder 6/6], compile 55%, about 1 min 22 s left"


def test_parallel_steps_are_all_named_and_ended_ones_dropped():
    head = MARKS.splitlines()[:9]  # venv 3/4 started, not done
    line = f.stack_image_build_progress(head, 30)
    assert line.startswith("image build: 30 s, steps [builder 6/6] [venv 3/4], compile 10%")


def test_ninja_counts_show_with_their_percentage():
    marks = ["#7 [builder 6/6]", "#7 5.0 [1/456] Building", "#7 105.0 [312/456] Building"]
    line = f.stack_image_build_progress(marks, 400)
    # 311 targets in 100 s: 144 left take about 46 s.
    assert (
        line
        == "image build: 6 min 40 s, step [builder 6/6], compile 312/456 (68%), about 46 s left"
    )


def test_no_time_left_before_the_compile_has_a_rate():
    line = f.stack_image_build_progress(["#7 [builder 6/6]", "#7 5.0 [  3%] Building"], 9)
    assert line == "image build: 9 s, step [builder 6/6], compile 3%"


def test_finished_compile_step_drops_the_compile_part():
    marks = [*MARKS.splitlines(), "#6 DONE 130.0s", "#9 exporting to image"]
    assert (
        f.stack_image_build_progress(marks, 400)
        == "image build: 6 min 40 s, step exporting to image"
    )


@pytest.mark.parametrize(
    ("marks", "expected"),
    [(None, "starting"), ("", "starting"), (["#1 [internal]", "#1 DONE 0.1s"], "finishing")],
)
def test_before_and_between_steps(marks, expected):
    assert f.stack_image_build_progress(marks, 2) == f"image build: 2 s, {expected}"


def test_a_failed_step_is_named():
    marks = [*MARKS.splitlines(), "#6 ERROR"]
    assert (
        f.stack_image_build_progress(marks, 200)
        == "image build: 3 min 20 s, failed in [builder 6/6]"
    )


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        ({"finished": True, "rc": 0}, "done"),
        ({"finished": True, "rc": 2}, "failed (exit code 2)"),
        ({"finished": True, "msg": "Timeout exceeded"}, "failed (Timeout exceeded)"),
    ],
)
def test_a_finished_job_says_how_it_ended(status, outcome):
    assert f.stack_image_build_progress(MARKS, 75, status) == f"image build: 1 min 15 s, {outcome}"


def test_a_running_job_status_changes_nothing():
    running = {"finished": False, "started": True}
    assert f.stack_image_build_progress(MARKS, 370, running) == f.stack_image_build_progress(
        MARKS, 370
    )


def test_the_role_grep_keeps_what_the_filter_reads():
    """The grep pattern of vars/main.yml, applied to raw BuildKit lines, feeds the filter."""
    import yaml  # noqa: PLC0415
    from project import REPO  # noqa: PLC0415

    kinds = yaml.safe_load((REPO / "roles/stack_image/vars/main.yml").read_text())[
        "__stack_image_build_mark_kinds"
    ]
    pattern = re.compile("^#[0-9]+ (" + "|".join(kinds) + ")")
    raw = [
        "#6 [builder 2/3] RUN echo configuring; for i in 1 2; do echo x; done",
        "#6 sha256:9e050f234c563c49155e8b4684757d07880533f5766e1fdd46796763b38350d5",
        "#6 0.159 configuring",
        "#6 1.164 [ 16%] Building CXX object ggml/src/x1.cpp.o",
        "#6 ...",
        "#6 3.685 [ 96%] Linking CXX shared library libggml.so",
        "#6 DONE 4.2s",
        "#9 exporting to image",
        "#9 writing image sha256:8c9facb440a071b0688315810f4d084f19d08942e676c122a03997be354c4462",
        "#9 naming to docker.io/library/progress-test:1 done",
    ]
    kept = [m.group(0) for line in raw if (m := pattern.match(line))]
    assert kept == [
        "#6 [builder 2/3]",
        "#6 1.164 [ 16%] Building",
        "#6 3.685 [ 96%] Linking",
        "#6 DONE 4.2s",
        "#9 exporting to image",
    ]
    assert f.stack_image_build_progress(kept, 5) == "image build: 5 s, step exporting to image"
