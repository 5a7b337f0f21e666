# Prepares this machine to build Meridian. Sourced by tools/gate and tools/meridian.
#
# - Installs what a fresh Debian/Ubuntu machine lacks: libclang (bindgen needs it for
#   RocksDB's bindings) and a C++ compiler. protoc comes vendored in a crate.
# - Keeps build outputs in one cache directory outside the clone ($MERIDIAN_CACHE), so fresh
#   clones and CI reuse them.
# - Reuses a prebuilt RocksDB archive when one exists for the locked librocksdb-sys version:
#   RocksDB's C++ takes ~9 minutes to compile on 2 cores, and cargo recompiles it whenever the
#   set of host-side crate features changes. The first build saves the archive
#   (save_rocksdb_archive); later builds only run bindgen.

MERIDIAN_CACHE=${MERIDIAN_CACHE:-$HOME/.cache/meridian}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$MERIDIAN_CACHE/target}
mkdir -p "$MERIDIAN_CACHE" "$CARGO_TARGET_DIR"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "need root to run: $*" >&2; return 1; fi
}

have_libclang() {
    compgen -G "/usr/lib/llvm-*/lib/libclang*.so*" >/dev/null &&
        compgen -G "/usr/lib/llvm-*/lib/clang/*/include/stdbool.h" >/dev/null
}

install_system_packages() {
    local packages=()
    have_libclang || packages+=(libclang-dev)
    command -v c++ >/dev/null || packages+=(g++)
    command -v make >/dev/null || packages+=(make)
    if [ ${#packages[@]} -gt 0 ]; then
        echo "installing system packages: ${packages[*]}" >&2
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}"
    fi
    if ! command -v cargo >/dev/null; then
        echo "cargo is missing: install Rust (https://rustup.rs) with the rustfmt and clippy components" >&2
        return 1
    fi
}

rocksdb_cache_dir() {
    local version
    version=$(awk '/^name = "librocksdb-sys"/ {getline; gsub(/"/, "", $3); print $3}' Cargo.lock)
    echo "$MERIDIAN_CACHE/rocksdb-$version"
}

use_rocksdb_archive() {
    local dir
    dir=$(rocksdb_cache_dir)
    if [ -f "$dir/librocksdb.a" ] && [ -f "$dir/libsnappy.a" ]; then
        export ROCKSDB_LIB_DIR=$dir ROCKSDB_STATIC=1 SNAPPY_LIB_DIR=$dir SNAPPY_STATIC=1
    fi
}

save_rocksdb_archive() {
    local dir out
    dir=$(rocksdb_cache_dir)
    [ -f "$dir/librocksdb.a" ] && return 0
    out=$(ls -td "$CARGO_TARGET_DIR"/debug/build/librocksdb-sys-*/out 2>/dev/null | while read -r d; do
        [ -f "$d/librocksdb.a" ] && [ -f "$d/libsnappy.a" ] && echo "$d" && break; done || true)
    [ -n "$out" ] || return 0
    mkdir -p "$dir.tmp" && cp "$out/librocksdb.a" "$out/libsnappy.a" "$dir.tmp/" && mv "$dir.tmp" "$dir"
    echo "saved the RocksDB archive to $dir for later builds" >&2
}

install_system_packages
use_rocksdb_archive
