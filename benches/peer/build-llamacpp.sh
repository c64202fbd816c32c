#!/usr/bin/env bash
# Builds llama.cpp's llama-bench, llama-simple, llama-perplexity and llama-quantize: the
# peer engine that benches/side-by-side.py and benches/accuracy.py compare glim with. The source is the llama.cpp that PyPI's
# llama-cpp-python==0.3.36 source package vendors (PyPI is reachable wherever glim's model
# is, GitHub not always). The Vulkan backend is built where the machine has glslc and the
# Vulkan headers, else the CPU backend only.
#
# Built once, in a cache outside the repository:
#   ${GLIM_PEER_DIR:-$GLIM_HOME/peer}/llama.cpp-0.3.36   (GLIM_HOME defaults to ~/.cache/glim)
# About 10 minutes on 2 cores. Progress goes to stderr; the last line of stdout is the
# absolute folder of the binaries and their shared libraries:
#   BIN=$(benches/peer/build-llamacpp.sh | tail -1)
# With --locate it builds nothing: it prints that folder, and fails if no build is there yet.
set -euo pipefail

version=0.3.36
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
home=${GLIM_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/glim}
peer=${GLIM_PEER_DIR:-$home/peer}
src="$peer/llama.cpp-$version"
bin="$src/build/bin"
log="$peer/build-llamacpp-$version.log"

say() { echo "build-llamacpp: $*" >&2; }

# A build stopped midway may have linked some of the tools only: require them all.
if [ -x "$bin/llama-bench" ] && [ -x "$bin/llama-simple" ] && [ -x "$bin/llama-perplexity" ] &&
    [ -x "$bin/llama-quantize" ]; then
    echo "$bin"
    exit 0
fi
if [ "${1:-}" = --locate ]; then
    say "llama.cpp is not built yet"
    echo "$bin"
    exit 1
fi
mkdir -p "$peer"

sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi

# Installs the apt packages that are missing and that apt can offer at all; glslc and the
# Vulkan headers are optional (without them the build is CPU only), cmake is not.
install_packages() {
    local missing=() pkg
    for pkg in "$@"; do
        [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" = "install ok installed" ] || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if ! command -v apt-get >/dev/null; then
        say "no apt-get here; install ${missing[*]} yourself"
        return 0
    fi
    $sudo apt-get update -q >&2
    local offered=()
    for pkg in "${missing[@]}"; do
        # Bookworm has all of these in main. A package only in backports (a suite that
        # scripts/install-lavapipe.sh adds) is a candidate too, and installed from there.
        # (Not piped into grep -q: under pipefail, apt-cache's SIGPIPE would read as "no".)
        local policy
        policy=$(apt-cache policy "$pkg" 2>/dev/null)
        if [[ "$policy" =~ Candidate:\ [^\(] ]]; then
            offered+=("$pkg")
        else
            say "apt offers no $pkg; going on without it"
        fi
    done
    [ ${#offered[@]} -eq 0 ] && return 0
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${offered[@]}" >&2
}
install_packages cmake libvulkan-dev glslc spirv-headers vulkan-tools
if ! command -v cmake >/dev/null; then
    say "cmake is needed and could not be installed"
    exit 1
fi

vulkan=OFF
if command -v glslc >/dev/null && [ -f /usr/include/vulkan/vulkan_core.h ]; then
    vulkan=ON
fi
say "Vulkan backend: $vulkan"

sdist="$peer/download/llama_cpp_python-$version.tar.gz"
if [ ! -d "$src" ] && [ ! -f "$sdist" ]; then
    # pip prepares the source package's metadata even for a download, and with build
    # isolation off that needs scikit-build-core (and cmake) present: keep them in a
    # throwaway venv so the system python is untouched.
    say "downloading llama-cpp-python==$version (source package)"
    venv="$peer/pip-venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet scikit-build-core >&2
    "$venv/bin/pip" download --quiet --no-deps --no-binary :all: --no-build-isolation \
        --dest "$peer/download" "llama-cpp-python==$version" >&2
    rm -rf "$venv"
fi
if [ ! -d "$src" ]; then
    # Unpacked aside and moved in whole, so that an interrupted unpack leaves no $src.
    tmp=$(mktemp -d "$peer/unpack.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    tar -xzf "$sdist" -C "$tmp"
    mv "$tmp/llama_cpp_python-$version/vendor/llama.cpp" "$src"
    rm -rf "$tmp"
    trap - EXIT
fi

# Debian 12's Vulkan headers (1.3.239) predate VK_EXT_layer_settings, which this llama.cpp
# uses unconditionally. The patch compiles that use out; a reverse dry run tells whether it
# is already applied.
patch_file="$here/llama-vulkan-headers-1.3.239.patch"
if [ "$vulkan" = ON ] && ! grep -q VK_EXT_layer_settings /usr/include/vulkan/vulkan_core.h; then
    if ! patch -d "$src" -p1 -R --dry-run -s -f <"$patch_file" >/dev/null 2>&1; then
        say "patching ggml-vulkan for Vulkan headers without VK_EXT_layer_settings"
        patch -d "$src" -p1 -s -f <"$patch_file" >&2
    fi
fi

say "building (about 10 minutes on 2 cores); log: $log"
start=$SECONDS
if ! {
    nice -n 10 cmake -S "$src" -B "$src/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
        -DGGML_VULKAN="$vulkan" -DLLAMA_CURL=OFF &&
        nice -n 10 cmake --build "$src/build" -j"$(nproc)" \
            --target llama-bench llama-simple llama-perplexity llama-quantize
} >"$log" 2>&1; then
    say "build failed; the last lines of $log:"
    tail -n 40 "$log" >&2
    exit 1
fi
say "built in $((SECONDS - start)) s"
echo "$bin"
