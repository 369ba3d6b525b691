"""Unit tests of the stack_image role's filters: the image tag decides whether a run rebuilds."""

from __future__ import annotations

import re

import pytest
from project import load

f = load("stack_image_filters", "roles/stack_image/filter_plugins/stack_image.py")

CONTEXT = "/opt/localai-llamacpp/build/context"
FILES = [
    {"path": f"{CONTEXT}/Dockerfile", "checksum": "a" * 40},
    {"path": f"{CONTEXT}/supervisord.conf", "checksum": "b" * 40},
    {"path": f"{CONTEXT}/certs/00-corp.crt", "checksum": "c" * 40},
]


@pytest.mark.parametrize(
    ("archs", "expected"),
    [
        ("", []),
        ("61", ["61"]),
        ("75;86", ["75", "86"]),
        (" 90a ", ["90a"]),
        ("61;120", ["61", "120"]),
    ],
)
def test_arch_list_accepts_cmake_architecture_strings(archs, expected):
    assert f.stack_image_arch_list(archs) == expected


@pytest.mark.parametrize("archs", ["6.1", "sm_61", "61,75", "75;", "native", "all", "7"])
def test_arch_list_refuses_what_cmake_would_choke_on(archs):
    with pytest.raises(ValueError, match="not like"):
        f.stack_image_arch_list(archs)


@pytest.mark.parametrize(
    ("archs", "slug"), [("", "cpu"), ("61", "sm61"), ("61;75", "sm61-75"), ("90a", "sm90a")]
)
def test_arch_slug_names_cpu_and_gpu_builds(archs, slug):
    assert f.stack_image_arch_slug(archs) == slug


def test_digest_is_stable_and_ignores_order():
    first = f.stack_image_context_digest(FILES, CONTEXT)
    assert re.fullmatch(r"[0-9a-f]{12}", first)
    assert f.stack_image_context_digest(list(reversed(FILES)), CONTEXT) == first


def test_digest_ignores_where_the_context_lives():
    moved = [{**item, "path": item["path"].replace(CONTEXT, "/srv/ctx")} for item in FILES]
    assert f.stack_image_context_digest(moved, "/srv/ctx") == f.stack_image_context_digest(
        FILES, CONTEXT
    )


def test_digest_changes_with_content_names_and_file_set():
    base = f.stack_image_context_digest(FILES, CONTEXT)
    edited = [dict(FILES[0], checksum="d" * 40), *FILES[1:]]
    renamed = [dict(FILES[2], path=f"{CONTEXT}/certs/01-corp.crt"), *FILES[:2]]
    removed = FILES[:2]
    digests = {f.stack_image_context_digest(files, CONTEXT) for files in (edited, renamed, removed)}
    assert base not in digests
    assert len(digests) == 3


def test_digest_of_an_empty_context_is_defined():
    assert len(f.stack_image_context_digest([], CONTEXT)) == 12


def test_tag_encodes_ref_architectures_and_digest():
    assert f.stack_image_tag("localai-llamacpp", "b10864", "61;75", "0123456789ab") == (
        "localai-llamacpp:b10864-sm61-75-0123456789ab"
    )
    assert f.stack_image_tag(
        "localai-llamacpp", "0c1e57098bba43ac29e6e3b677cdceebdd22334f", "", "0123456789ab"
    ) == ("localai-llamacpp:0c1e57098bba-cpu-0123456789ab")


@pytest.mark.parametrize("ref", ["release/v1.2", "-weird ref!", "." * 3, "x" * 300])
def test_tag_is_always_a_valid_docker_tag(ref):
    tag = f.stack_image_tag("localai-llamacpp", ref, "75;86", "0123456789ab")
    name, _, tag_part = tag.partition(":")
    assert name == "localai-llamacpp"
    assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", tag_part), tag_part
    assert tag_part.endswith("-sm75-86-0123456789ab")


def test_cert_names_are_crt_indexed_and_distinct():
    names = f.stack_image_cert_names(["/a/corp.pem", "/b/corp.pem", "/c/proxy.crt", "/d/x.CER"])
    assert names == ["00-corp.crt", "01-corp.crt", "02-proxy.crt", "03-x.crt"]


def test_filter_module_exports_every_filter():
    exported = f.FilterModule().filters()
    assert set(exported) == {
        "stack_image_arch_list",
        "stack_image_arch_slug",
        "stack_image_cert_names",
        "stack_image_context_digest",
        "stack_image_tag",
        "stack_image_wheels_missing",
    }
