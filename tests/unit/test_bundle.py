"""Unit tests of the air-gapped bundle: its manifest module, its filters, the image role's
wheel check and the Dockerfile's bundle branch.

The bundle's promise is that a site provisions from it alone, and that a bundle missing a piece
stops in preflight naming the file and the command that adds it; these tests hold the parts of
that promise that need no Docker: manifest writing and verification, reproducible packing, the
mapping from bundle pieces to the roles' inputs, and the rendered Dockerfile of both modes.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import tarfile
from pathlib import Path

import jinja2
import pytest
import yaml
from project import REPO, container_interface, load

bundle_module = load("localai_bundle_module", "roles/bundle/library/localai_bundle.py")
bundle_filters = load("bundle_filters", "roles/bundle/filter_plugins/bundle.py")
image_filters = load(
    "stack_image_filters_for_bundle", "roles/stack_image/filter_plugins/stack_image.py"
)

REQUIREMENTS = REPO / "roles/stack_image/files/requirements-stack.txt"


def make_bundle(root: Path) -> dict:
    """A small bundle on disk: an apt piece, a wheel piece, a model; returns its pieces."""
    (root / "apt/host-debian-12").mkdir(parents=True)
    (root / "apt/host-debian-12/docker.io_20.10_amd64.deb").write_bytes(b"deb")
    (root / "apt/host-debian-12/Packages").write_text("Package: docker.io\n")
    (root / "wheels/debian-bookworm").mkdir(parents=True)
    (root / "wheels/debian-bookworm/a-1-py3-none-any.whl").write_bytes(b"wheel a")
    (root / "wheels/debian-bookworm/b-2-py3-none-any.whl").write_bytes(b"wheel b")
    (root / "models").mkdir()
    (root / "models/chat.gguf").write_bytes(b"GGUF")
    return {
        "apt-host-debian-12": {
            "path": "apt/host-debian-12",
            "kind": "apt-host",
            "for": "host packages",
            "meta": {"key": "debian-12", "packages": ["docker.io"]},
        },
        "wheels-debian-bookworm": {
            "path": "wheels/debian-bookworm",
            "kind": "wheels",
            "for": "wheels of the venv",
            "meta": {"key": "debian:bookworm"},
        },
        "model-chat.gguf": {
            "path": "models/chat.gguf",
            "kind": "model",
            "for": "the chat model",
            "meta": {
                "key": "chat.gguf",
                "sha256": hashlib.sha256(b"GGUF").hexdigest(),
            },
        },
    }


@pytest.fixture
def bundle(tmp_path):
    root = tmp_path / "bundle"
    pieces = make_bundle(root)
    inputs = {"bundle_dir": str(root), "bundle_host_releases": ["debian-12"]}
    manifest = bundle_module.build_manifest(str(root), pieces, inputs)
    assert bundle_module.write_manifest(str(root), manifest)
    return root


def test_manifest_lists_every_file_with_size_sha256_and_piece(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    by_path = {entry["path"]: entry for entry in manifest["files"]}
    assert set(by_path) == {
        "apt/host-debian-12/Packages",
        "apt/host-debian-12/docker.io_20.10_amd64.deb",
        "wheels/debian-bookworm/a-1-py3-none-any.whl",
        "wheels/debian-bookworm/b-2-py3-none-any.whl",
        "models/chat.gguf",
    }
    wheel = by_path["wheels/debian-bookworm/a-1-py3-none-any.whl"]
    assert wheel == {
        "path": "wheels/debian-bookworm/a-1-py3-none-any.whl",
        "size": 7,
        "sha256": hashlib.sha256(b"wheel a").hexdigest(),
        "piece": "wheels-debian-bookworm",
    }
    assert manifest["size"] == sum(entry["size"] for entry in manifest["files"])
    # SHA256SUMS is what `sha256sum -c` reads.
    sums = (bundle / "SHA256SUMS").read_text().splitlines()
    assert f"{wheel['sha256']}  {wheel['path']}" in sums


def test_writing_the_same_manifest_again_changes_nothing(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert not bundle_module.write_manifest(str(bundle), manifest)


def test_a_file_of_no_piece_is_refused(tmp_path):
    root = tmp_path / "bundle"
    pieces = make_bundle(root)
    (root / "notes.txt").write_text("?")
    with pytest.raises(ValueError, match=r"notes\.txt belongs to no piece"):
        bundle_module.build_manifest(str(root), pieces, {})


def test_a_sound_bundle_verifies(bundle):
    manifest = bundle_module.read_manifest(str(bundle))
    assert bundle_module.verify_files(str(bundle), manifest, "REMAKE") == []


def test_a_removed_wheel_is_named_with_the_command_that_adds_it(bundle):
    (bundle / "wheels/debian-bookworm/b-2-py3-none-any.whl").unlink()
    manifest = bundle_module.read_manifest(str(bundle))
    remake = bundle_module.remake_command(manifest, str(bundle))
    errors = bundle_module.verify_files(str(bundle), manifest, remake)
    assert errors == [
        "bundle file wheels/debian-bookworm/b-2-py3-none-any.whl (wheels of the venv) is missing;"
        f" add it back: {remake}"
    ]
    # The command is the bundle playbook with the inputs the bundle was made from.
    assert remake.startswith("ansible-playbook playbooks/bundle.yml -e '{")
    assert json.loads(remake.split("-e ", 1)[1].strip("'")) == manifest["inputs"]
    moved = bundle_module.remake_command(manifest, "/media/usb/bundle")
    assert json.loads(moved.split("-e ", 1)[1].strip("'"))["bundle_dir"] == "/media/usb/bundle"


def test_changed_and_unlisted_files_are_refused(bundle):
    (bundle / "models/chat.gguf").write_bytes(b"GGUX")
    (bundle / "wheels/debian-bookworm/c-3-py3-none-any.whl").write_bytes(b"c")
    (bundle / "apt/host-debian-12/Packages").write_text("Package: docker.io\nVersion: 2\n")
    manifest = bundle_module.read_manifest(str(bundle))
    errors = bundle_module.verify_files(str(bundle), manifest, "REMAKE")
    assert len(errors) == 3
    assert any(
        "models/chat.gguf" in e and "does not have the manifest's sha256" in e for e in errors
    )
    assert any("Packages" in e and "bytes, the manifest says" in e for e in errors)
    assert any("c-3-py3-none-any.whl is not in manifest.json" in e for e in errors)


def test_a_directory_without_manifest_is_not_a_bundle(tmp_path):
    with pytest.raises(ValueError, match=r"manifest\.json is missing"):
        bundle_module.read_manifest(str(tmp_path))


def test_packing_is_reproducible_and_named_by_content(bundle, tmp_path):
    manifest = bundle_module.read_manifest(str(bundle))
    first = bundle_module.site_pieces(str(bundle), manifest, str(tmp_path / "cache1"))
    second = bundle_module.site_pieces(str(bundle), manifest, str(tmp_path / "cache2"))
    wheels1 = Path(first["wheels-debian-bookworm"]["archive"])
    wheels2 = Path(second["wheels-debian-bookworm"]["archive"])
    assert wheels1.name == wheels2.name
    assert wheels1.read_bytes() == wheels2.read_bytes()
    with tarfile.open(wheels1) as archive:
        members = archive.getmembers()
    assert [m.name for m in members] == ["a-1-py3-none-any.whl", "b-2-py3-none-any.whl"]
    assert {(m.mtime, m.uid, m.mode) for m in members} == {(0, 0, 0o644)}
    # Single-file pieces are used where they are, not packed.
    assert "archive" not in first["model-chat.gguf"]
    assert first["model-chat.gguf"]["path"] == str(bundle / "models/chat.gguf")
    assert first["wheels-debian-bookworm"]["files"][0]["name"] == "a-1-py3-none-any.whl"


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("nvidia/cuda:12.9.1-runtime-ubuntu24.04", "nvidia-cuda-12.9.1-runtime-ubuntu24.04"),
        ("debian:bookworm-slim", "debian-bookworm-slim"),
        ("localai-llamacpp-test/debian:bookworm", "localai-llamacpp-test-debian-bookworm"),
    ],
)
def test_slug_names_folders_after_images(name, slug):
    assert bundle_filters.bundle_slug(name) == slug


def test_python_tag_of_the_distribution_python3():
    assert bundle_filters.bundle_python_tag("3.11.2-1+b1") == "3.11"
    assert bundle_filters.bundle_python_tag("3.12.3-0ubuntu2") == "3.12"
    with pytest.raises(ValueError):
        bundle_filters.bundle_python_tag("")


def test_pip_platforms_cover_every_manylinux_tag_the_glibc_runs():
    platforms = bundle_filters.bundle_pip_platforms("2.36-9+deb12u13", "amd64")
    assert platforms[0] == "manylinux_2_36_x86_64"
    assert "manylinux_2_37_x86_64" not in platforms
    for tag in ("manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"):
        assert tag in platforms
    assert bundle_filters.bundle_pip_platforms("2.39-0ubuntu8", "arm64")[0] == (
        "manylinux_2_39_aarch64"
    )
    with pytest.raises(ValueError):
        bundle_filters.bundle_pip_platforms("2.36", "s390x")


def test_models_with_urls_come_from_the_bundle(bundle):
    pieces = bundle_module.site_pieces(str(bundle), bundle_module.read_manifest(str(bundle)), None)
    sha = hashlib.sha256(b"GGUF").hexdigest()
    models = [
        {"name": "chat", "file": "chat.gguf", "url": "https://example.org/chat.gguf", "sha256": ""},
        {"name": "local", "file": "local.gguf", "src": "/srv/local.gguf", "sha256": "a" * 64},
    ]
    result = bundle_filters.bundle_models(models, pieces)
    assert result["errors"] == []
    chat, local = result["models"]
    assert chat["src"] == str(bundle / "models/chat.gguf")
    assert chat["sha256"] == sha
    assert "url" not in chat
    assert local == models[1]


def test_models_missing_or_pinned_otherwise_are_refused(bundle):
    pieces = bundle_module.site_pieces(str(bundle), bundle_module.read_manifest(str(bundle)), None)
    models = [
        {"name": "chat", "file": "chat.gguf", "url": "https://x/chat.gguf", "sha256": "b" * 64},
        {"name": "new", "file": "new.gguf", "url": "https://x/new.gguf", "sha256": ""},
    ]
    errors = bundle_filters.bundle_models(models, pieces)["errors"]
    assert "the entry pins " + "b" * 64 in errors[0]
    assert errors[1] == "localai_models entry 'new' (new.gguf) is not in the bundle"


def test_archives_map_what_pieces_are_for_to_their_tars(bundle, tmp_path):
    manifest = bundle_module.read_manifest(str(bundle))
    pieces = bundle_module.site_pieces(str(bundle), manifest, str(tmp_path / "cache"))
    assert bundle_filters.bundle_archives(pieces, "apt-host") == {
        "debian-12": pieces["apt-host-debian-12"]["archive"]
    }
    wheels = bundle_filters.bundle_archives(pieces, "wheels", with_files=True)
    assert set(wheels) == {"debian:bookworm"}
    assert {f["name"] for f in wheels["debian:bookworm"]["files"]} == {
        "a-1-py3-none-any.whl",
        "b-2-py3-none-any.whl",
    }


def test_requirements_parse_every_pin_with_its_hashes():
    pins = image_filters.stack_image_requirements(REQUIREMENTS.read_text())
    by_pin = {pin["pin"]: pin["hashes"] for pin in pins}
    assert "litellm==1.108.0" in by_pin
    assert all(len(hashes) >= 1 for hashes in by_pin.values())
    assert len(pins) == sum(
        1 for line in REQUIREMENTS.read_text().splitlines() if "==" in line and line[0].isalnum()
    )


def test_wheels_missing_names_the_pins_no_wheel_meets():
    pins = image_filters.stack_image_requirements(REQUIREMENTS.read_text())
    files = [{"name": f"w{i}.whl", "sha256": pin["hashes"][0]} for i, pin in enumerate(pins)]
    text = REQUIREMENTS.read_text()
    assert image_filters.stack_image_wheels_missing(text, files) == []
    dropped = files.pop(3)
    assert image_filters.stack_image_wheels_missing(text, files) == [pins[3]["pin"]]
    # An sdist with the right hash is no wheel: the build installs binaries only.
    files.append({"name": "x.tar.gz", "sha256": dropped["sha256"]})
    assert image_filters.stack_image_wheels_missing(text, files) == [pins[3]["pin"]]


def render_dockerfile(**overrides: object) -> str:
    """The Dockerfile as the role renders it (trim_blocks, as Ansible's template module)."""
    variables = yaml.safe_load((REPO / "roles/stack_image/vars/main.yml").read_text())
    values: dict[str, object] = {
        "ansible_managed": "managed",
        "stack_image_llamacpp_source": "archive",
        "stack_image_llamacpp_ref": "0c1e57098bba43ac29e6e3b677cdceebdd22334f",
        "stack_image_llamacpp_git_url": "",
        "stack_image_cuda_architectures": "",
        "stack_image_cpu_native": True,
        "stack_image_litellm_version": "1.108.0",
        "stack_image_build_network": "default",
        "stack_image_apt_archives": {},
        "__stack_image_build_base": "debian:bookworm-slim",
        "__stack_image_runtime_base": "debian:bookworm-slim",
        "__stack_image_kind_text": "the CPU",
        "__stack_image_apt_packages": variables["__stack_image_apt_packages"],
        "__stack_image_apt_context": {"builder": "", "venv": "", "runtime": ""},
        "__stack_image_wheels": False,
        **container_interface(),
    }
    values.update(overrides)
    env = jinja2.Environment(trim_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["comment"] = lambda text: "# " + str(text)
    env.filters["quote"] = lambda text: shlex.quote(str(text))
    env.filters["bool"] = bool
    template = (REPO / "roles/stack_image/templates/Dockerfile.j2").read_text()
    return env.from_string(template).render(**values)


def test_dockerfile_without_a_bundle_installs_from_the_bases_sources():
    text = render_dockerfile()
    assert "bash /tmp/apt-install.sh ca-certificates build-essential cmake ccache git \\\n" in text
    assert "localai-apt.tar" not in text
    assert "--no-index" not in text
    assert "\\\n\n" not in text  # no empty line inside a continued RUN


def test_dockerfile_with_a_bundle_reads_its_repositories_and_wheels_only():
    text = render_dockerfile(
        stack_image_build_network="none",
        stack_image_apt_archives={"debian:bookworm-slim": "/c/apt.tar"},
        __stack_image_apt_context={
            "builder": "bundle/apt-build.tar",
            "venv": "bundle/apt-build.tar",
            "runtime": "bundle/apt-build.tar",
        },
        __stack_image_wheels=True,
    )
    assert text.count("source=bundle/apt-build.tar,target=/tmp/localai-apt.tar") == 3
    assert text.count("bash /tmp/apt-install.sh -r /tmp/localai-apt.tar") == 3
    assert "--no-index --find-links /tmp/wheels --require-hashes --no-deps" in text
    assert "source=bundle/wheels.tar" in text
    assert "Built with --network none" in text
    assert "\\\n\n" not in text
