"""Unit tests of roles/stack_image/files/build-llama-server.sh with a stand-in for cmake.

The script is the one place the CMake flags live (the Dockerfile and the native GPU build both
run it), so the flags for CPU and GPU builds, the refusal of bad architecture strings and the
install layout are checked here in seconds, without compiling llama.cpp.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "roles/stack_image/files/build-llama-server.sh"

# Stand-in for cmake: records its arguments; on --build it "compiles" by copying a real dynamic
# executable (so ldd works) and creating shared libraries with a symlink, as llama.cpp does.
FAKE_CMAKE = """#!/usr/bin/env bash
set -eu
printf '%s\\n' "$*" >> "$FAKE_LOG"
if [ "$1" = "--build" ]; then
  mkdir -p "$2/bin"
  cp "${FAKE_SERVER:-/bin/true}" "$2/bin/llama-server"
  printf 'elf' > "$2/bin/libggml-base.so.0.9.0"
  ln -sf libggml-base.so.0.9.0 "$2/bin/libggml-base.so.0"
  ln -sf libggml-base.so.0 "$2/bin/libggml-base.so"
fi
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A PATH whose cmake is the stand-in, and a fake source tree."""
    fake_bin = tmp_path / "fakebin"
    fake_bin.mkdir()
    cmake = fake_bin / "cmake"
    cmake.write_text(FAKE_CMAKE)
    cmake.chmod(cmake.stat().st_mode | stat.S_IXUSR)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "CMakeLists.txt").write_text("project(fake)\n")
    environ = {k: v for k, v in os.environ.items() if k not in {"CUDA_ARCHITECTURES", "JOBS"}}
    environ.update(
        PATH=f"{fake_bin}:{environ['PATH']}",
        FAKE_LOG=str(tmp_path / "cmake.log"),
        CCACHE_DIR=str(tmp_path / "ccache"),
    )
    return environ


def run(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run the build script on the fake tree into tmp_path/prefix."""
    cmd = ["bash", str(SCRIPT), "-s", str(tmp_path / "src"), "-p", str(tmp_path / "prefix"), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)


def cmake_calls(tmp_path: Path) -> list[str]:
    """The argument lines the stand-in cmake saw."""
    return (tmp_path / "cmake.log").read_text().splitlines()


def test_cpu_build_is_native_without_cuda_and_builds_only_the_server(tmp_path, env):
    result = run(tmp_path, env, "-a", "", "-j", "3")
    assert result.returncode == 0, result.stderr
    configure, build = cmake_calls(tmp_path)
    for flag in (
        "-DGGML_CUDA=OFF",
        "-DGGML_NATIVE=ON",
        "-DLLAMA_CURL=OFF",
        "-DLLAMA_OPENSSL=OFF",
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_USE_PREBUILT_UI=OFF",
    ):
        assert flag in configure.split()
    assert "CMAKE_CUDA_ARCHITECTURES" not in configure
    assert build.endswith("--parallel 3 --target llama-server")
    assert "cmake flags:" in result.stdout
    assert "built llama-server (cpu (native=ON)) in 0m" in result.stdout


def test_cpu_build_can_be_portable(tmp_path, env):
    result = run(tmp_path, {**env, "LLAMA_CPU_NATIVE": "OFF"})
    assert result.returncode == 0, result.stderr
    assert "-DGGML_NATIVE=OFF" in cmake_calls(tmp_path)[0].split()
    assert "amx" not in cmake_calls(tmp_path)[0]  # the portable baseline has none to take out


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="AMX is an x86-64 extension")
def test_native_cpu_build_leaves_amx_out(tmp_path, env):
    """-march=native without AMX: its kernels crash llama-server on VMs that report AMX.

    Seen on a Sapphire Rapids guest: the natively built server died at its first request,
    SIGSEGV/SIGILL in ggml_backend_amx_mul_mat (ldtilecfg); built with these flags it serves.
    """
    result = run(tmp_path, env, "-a", "")
    assert result.returncode == 0, result.stderr
    configure = cmake_calls(tmp_path)[0]
    no_amx = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    assert f"-DCMAKE_C_FLAGS={no_amx}" in configure
    assert f"-DCMAKE_CXX_FLAGS={no_amx}" in configure
    gpu = run(tmp_path, env, "-a", "90")
    assert gpu.returncode == 0, gpu.stderr
    assert "amx" not in cmake_calls(tmp_path)[-2]  # GPU builds are not native: nothing to drop


@pytest.mark.parametrize("how", ["option", "env"])
def test_gpu_build_targets_exactly_the_given_architectures(tmp_path, env, how):
    if how == "option":
        result = run(tmp_path, env, "-a", "61;75")
    else:
        result = run(tmp_path, {**env, "CUDA_ARCHITECTURES": "61;75"})
    assert result.returncode == 0, result.stderr
    configure = cmake_calls(tmp_path)[0].split()
    assert {"-DGGML_CUDA=ON", "-DGGML_NATIVE=OFF", "-DCMAKE_CUDA_ARCHITECTURES=61;75"} <= set(
        configure
    )
    assert "cuda sm_61,sm_75" in result.stdout


def test_default_builds_cuda_for_llama_cpp_s_own_list(tmp_path, env):
    result = run(tmp_path, env, "-a", "default")
    assert result.returncode == 0, result.stderr
    configure = cmake_calls(tmp_path)[0].split()
    assert {"-DGGML_CUDA=ON", "-DGGML_NATIVE=OFF"} <= set(configure)
    # No list of ours: CMake takes ggml-cuda's portable default.
    assert not any(f.startswith("-DCMAKE_CUDA_ARCHITECTURES") for f in configure)


@pytest.mark.parametrize("archs", ["61", "default"])
def test_gpu_build_links_without_the_driver_library(tmp_path, env, archs):
    """A build host has no libcuda.so.1 (only the toolkit's stub): the link must not need it.

    Found by the CUDA 12.4 build for compute capability 6.1 on a CPU machine
    (bench/build_cuda12_sm61.sh): llama-server's link failed with undefined cuMem* references of
    libggml-cuda.so. llama.cpp's .devops/cuda.Dockerfile links with the same flag.
    """
    result = run(tmp_path, env, "-a", archs)
    assert result.returncode == 0, result.stderr
    configure = cmake_calls(tmp_path)[0].split()
    assert "-DCMAKE_EXE_LINKER_FLAGS=-Wl,--allow-shlib-undefined" in configure


def test_cpu_build_links_strictly(tmp_path, env):
    result = run(tmp_path, env, "-a", "")
    assert result.returncode == 0, result.stderr
    assert "allow-shlib-undefined" not in cmake_calls(tmp_path)[0]


@pytest.mark.parametrize("archs", ["6.1", "61,75", "native", "75;"])
def test_bad_architectures_fail_before_cmake(tmp_path, env, archs):
    result = run(tmp_path, env, "-a", archs)
    assert result.returncode == 2
    assert "not like" in result.stderr
    assert not (tmp_path / "cmake.log").exists()


def test_missing_source_tree_is_refused(tmp_path, env):
    (tmp_path / "src" / "CMakeLists.txt").unlink()
    result = run(tmp_path, env)
    assert result.returncode == 2
    assert "no CMakeLists.txt" in result.stderr


def test_installs_the_server_and_its_libraries_with_symlinks(tmp_path, env):
    assert run(tmp_path, env).returncode == 0
    prefix = tmp_path / "prefix"
    server = prefix / "bin" / "llama-server"
    assert server.is_file()
    assert os.access(server, os.X_OK)
    assert (prefix / "lib" / "libggml-base.so.0.9.0").is_file()
    assert os.readlink(prefix / "lib" / "libggml-base.so") == "libggml-base.so.0"
    assert sorted(p.name for p in (prefix / "bin").iterdir()) == ["llama-server"]


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")
def test_unresolved_library_fails_the_build(tmp_path, env):
    # A server linked against a library that is gone afterwards: ldd reports "not found".
    libdir = tmp_path / "gone"
    libdir.mkdir()
    (tmp_path / "x.c").write_text("int x(void) { return 0; }\n")
    (tmp_path / "main.c").write_text("int x(void); int main(void) { return x(); }\n")
    subprocess.run(
        ["cc", "-shared", "-fPIC", "-o", libdir / "libgone.so", tmp_path / "x.c"], check=True
    )
    server = tmp_path / "server"
    subprocess.run(["cc", "-o", server, tmp_path / "main.c", f"-L{libdir}", "-lgone"], check=True)
    shutil.rmtree(libdir)
    result = run(tmp_path, {**env, "FAKE_SERVER": str(server)})
    assert result.returncode == 1
    assert "unresolved libraries: libgone.so" in result.stderr


def test_archive_builds_can_name_their_commit(tmp_path, env):
    result = run(tmp_path, {**env, "LLAMA_BUILD_COMMIT": "0c1e570"})
    assert result.returncode == 0, result.stderr
    assert "-DLLAMA_BUILD_COMMIT=0c1e570" in cmake_calls(tmp_path)[0].split()


def test_help_prints_the_usage(tmp_path, env):
    result = run(tmp_path, env, "-h")
    assert result.returncode == 2
    assert "Usage: build-llama-server.sh" in result.stderr
    assert "LLAMA_BUILD_COMMIT" in result.stderr


PATCHES = SCRIPT.parent / "llama.cpp-patches"
FAKE_PATCH = """--- a/server.cpp
+++ b/server.cpp
@@ -1 +1 @@
-wait_for(lock, timeout);
+wait_until(lock, deadline);
"""


def test_patches_apply_once_and_a_mismatch_stops_the_build(tmp_path, env):
    """Applied before configure; a rerun on the patched tree skips it; a foreign tree fails."""
    patches = tmp_path / "patches"
    patches.mkdir()
    (patches / "0001-fix.patch").write_text(FAKE_PATCH)
    source = tmp_path / "src" / "server.cpp"
    source.write_text("wait_for(lock, timeout);\n")
    # An enclosing repository (the fixtures' tree sits in a checkout) must not matter.
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    first = run(tmp_path, env, "-a", "", "-P", str(patches))
    assert first.returncode == 0, first.stderr
    assert source.read_text() == "wait_until(lock, deadline);\n"
    assert "applied 0001-fix.patch" in first.stdout
    again = run(tmp_path, env, "-a", "", "-P", str(patches))
    assert again.returncode == 0, again.stderr
    assert "0001-fix.patch is already applied" in again.stdout
    assert source.read_text() == "wait_until(lock, deadline);\n"
    source.write_text("something else\n")
    (tmp_path / "cmake.log").unlink()
    foreign = run(tmp_path, env, "-a", "", "-P", str(patches))
    assert foreign.returncode == 1
    assert "0001-fix.patch does not apply" in foreign.stderr
    assert not (tmp_path / "cmake.log").exists()  # stopped before configure


def test_the_roles_patches_apply_to_the_pinned_source():
    """Every patch in the role applies to the llama.cpp tree the fixtures hold (same ref)."""
    tree = SCRIPT.parents[3] / ".cache/src/llama.cpp"
    if not (tree / "CMakeLists.txt").exists():
        pytest.skip("no fixtures source tree (make fixtures)")
    patches = sorted(PATCHES.glob("*.patch"))
    assert patches
    for patch in patches:
        check = subprocess.run(
            ["git", "apply", "--check", "-p1", str(patch)], cwd=tree, capture_output=True,
            text=True, env={**os.environ, "GIT_DIR": "/nonexistent"}, check=False,
        )  # fmt: skip
        reverse = subprocess.run(
            ["git", "apply", "--check", "-R", "-p1", str(patch)], cwd=tree, capture_output=True,
            text=True, env={**os.environ, "GIT_DIR": "/nonexistent"}, check=False,
        )  # fmt: skip
        assert check.returncode == 0 or reverse.returncode == 0, (patch.name, check.stderr)
