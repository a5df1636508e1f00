#!/usr/bin/env bash
# Builds OPI_OpenAI.zip, the add-in as 1C:Enterprise and OneScript attach it:
#   AttachAddIn("<path>/OPI_OpenAI.zip", "OPI_OpenAI", AddInType.Native)
# The zip holds MANIFEST.XML (from the template beside this script, keeping only the
# components found) and each binary under the name the manifest gives it.
#
# Usage: examples/1c/package.sh [--no-build] [--out FILE]
#   --no-build  do not build; package what is already built
#   --out FILE  where to write the zip (default: $CARGO_TARGET_DIR/OPI_OpenAI.zip,
#               or target/OPI_OpenAI.zip)
#
# Binaries, each taken when present (an environment variable names a file explicitly):
#   AddIn_x64_linux.so     $OPI_ADDIN_X64_LINUX    or <target>/x86_64-unknown-linux-gnu/release/...
#                                                  (zigbuild) or <target>/release/libopi_openai.so
#                                                  (native build, x86_64 hosts)
#   AddIn_x86_linux.so     $OPI_ADDIN_X86_LINUX    or <target>/i686-unknown-linux-gnu/release/...
#   AddIn_x64_windows.dll  $OPI_ADDIN_X64_WINDOWS  or <target>/x86_64-pc-windows-{msvc,gnu}/release/opi_openai.dll
#   AddIn_x86_windows.dll  $OPI_ADDIN_X86_WINDOWS  or <target>/i686-pc-windows-{msvc,gnu}/release/opi_openai.dll
# The build: with cargo-zigbuild and zig present (and the x86_64-unknown-linux-gnu Rust
# target), the Linux library is built for glibc 2.17, so it loads on old 1C servers (CentOS 7
# and newer):
#   cargo zigbuild --release --lib --no-default-features --target x86_64-unknown-linux-gnu.2.17
# Install them with `pip install ziglang` and `cargo install cargo-zigbuild --locked`.
# Without them, a native `cargo build --release --lib`, whose library needs this machine's
# glibc: the script says which version when it packages a library that needs more than 2.17.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
out=""
build=1

while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) build=0 ;;
        --out) out="${2:?--out needs a file name}"; shift ;;
        -h|--help) sed -n '2,/^set -euo/{/^#/p}' "$0"; exit 0 ;;
        *) echo "package.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
out="${out:-$target/OPI_OpenAI.zip}"

zig_triple=x86_64-unknown-linux-gnu
zig_lib="$target/$zig_triple/release/libopi_openai.so"

# zig_ready: cargo-zigbuild, a zig it can find (as it looks: `python3 -m ziglang`, then
# `zig`) and the Rust target are all present. Prints what is missing otherwise.
zig_ready() {
    if ! cargo-zigbuild --version > /dev/null 2>&1; then
        echo "cargo-zigbuild is not installed"
        return 1
    fi
    if ! "${CARGO_ZIGBUILD_PYTHON_PATH:-python3}" -m ziglang version > /dev/null 2>&1 &&
        ! "${CARGO_ZIGBUILD_ZIG_PATH:-zig}" version > /dev/null 2>&1; then
        echo "zig is not installed (neither 'python3 -m ziglang' nor 'zig')"
        return 1
    fi
    if [ ! -d "$(rustc --print sysroot)/lib/rustlib/$zig_triple" ]; then
        echo "the Rust target $zig_triple is not installed"
        return 1
    fi
}

zigbuilt=0
if [ "$build" = 1 ]; then
    if why="$(zig_ready)"; then
        (cd "$root" && cargo zigbuild --release --lib --no-default-features --target "$zig_triple.2.17")
        zigbuilt=1
    else
        echo "package.sh: warning: $why; building natively instead, for this machine's glibc" >&2
        echo "package.sh: for glibc 2.17: pip install ziglang && cargo install cargo-zigbuild --locked" >&2
        (cd "$root" && cargo build --release --lib)
    fi
fi

# A file named by an environment variable must exist: a typo should not silently drop a
# platform from the bundle.
for var in OPI_ADDIN_X64_LINUX OPI_ADDIN_X86_LINUX OPI_ADDIN_X64_WINDOWS OPI_ADDIN_X86_WINDOWS; do
    value="${!var:-}"
    if [ -n "$value" ] && [ ! -f "$value" ]; then
        echo "package.sh: $var names no file: $value" >&2
        exit 1
    fi
done

# first_existing CANDIDATE...: prints the first candidate that is a file, if any.
first_existing() {
    local candidate
    for candidate in "$@"; do
        if [ -n "$candidate" ] && [ -f "$candidate" ]; then
            echo "$candidate"
            return
        fi
    done
}

native_x64=""
if [ "$(uname -s)" = Linux ] && [ "$(uname -m)" = x86_64 ]; then
    native_x64="$target/release/libopi_openai.so"
fi

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
found=()
add() {
    local name="$1" file="$2"
    [ -n "$file" ] || return 0
    cp "$file" "$stage/$name"
    found+=("$name")
    echo "package.sh: $name <- $file"
}
add AddIn_x64_windows.dll "$(first_existing "${OPI_ADDIN_X64_WINDOWS:-}" \
    "$target/x86_64-pc-windows-msvc/release/opi_openai.dll" "$target/x86_64-pc-windows-gnu/release/opi_openai.dll")"
add AddIn_x86_windows.dll "$(first_existing "${OPI_ADDIN_X86_WINDOWS:-}" \
    "$target/i686-pc-windows-msvc/release/opi_openai.dll" "$target/i686-pc-windows-gnu/release/opi_openai.dll")"
# The library just built wins; without a build, an explicit-target (zigbuild, glibc 2.17)
# library wins over a native one.
if [ "$build" = 1 ] && [ "$zigbuilt" = 0 ]; then
    x64_linux=("$native_x64" "$zig_lib")
else
    x64_linux=("$zig_lib" "$native_x64")
fi
x64_linux_so="$(first_existing "${OPI_ADDIN_X64_LINUX:-}" "${x64_linux[@]}")"
add AddIn_x64_linux.so "$x64_linux_so"
add AddIn_x86_linux.so "$(first_existing "${OPI_ADDIN_X86_LINUX:-}" \
    "$target/i686-unknown-linux-gnu/release/libopi_openai.so")"

# The oldest glibc the Linux library loads on: the highest GLIBC_ version it requires.
if [ -n "$x64_linux_so" ]; then
    if command -v objdump > /dev/null; then
        glibc="$(objdump -p "$x64_linux_so" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' |
            sort -uV | tail -n 1)"
        glibc="${glibc:-unknown}"
    else
        glibc="unknown (no objdump)"
    fi
    case "$glibc" in
        2.1[0-7] | 2.1[0-7].* | 2.[0-9] | 2.[0-9].*)
            echo "package.sh: AddIn_x64_linux.so needs glibc $glibc or newer" ;;
        *)
            echo "package.sh: warning: AddIn_x64_linux.so needs glibc $glibc or newer, not 2.17" \
                "(old 1C servers such as CentOS 7 cannot load it); build with cargo-zigbuild" >&2 ;;
    esac
fi

if [ "${#found[@]}" = 0 ]; then
    echo "package.sh: no add-in binary found; build with 'cargo build --release' or drop --no-build" >&2
    exit 1
fi

# The manifest lists exactly the binaries in the zip: 1C refuses a bundle whose manifest
# names a missing file.
awk -v names="${found[*]}" '
    BEGIN { n = split(names, list, " "); for (i = 1; i <= n; i++) keep[list[i]] = 1 }
    /<component / {
        match($0, /path="[^"]*"/)
        path = substr($0, RSTART + 6, RLENGTH - 7)
        if (!(path in keep)) next
    }
    { print }
' "$here/MANIFEST.XML" > "$stage/MANIFEST.XML"

mkdir -p "$(dirname "$out")"
out="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
rm -f "$out"
if command -v python3 > /dev/null; then
    python3 - "$out" "$stage" MANIFEST.XML "${found[@]}" <<'PY'
import sys, zipfile, os
out, stage, names = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
    for name in names:
        z.write(os.path.join(stage, name), name)
PY
elif command -v zip > /dev/null; then
    (cd "$stage" && zip -q -X "$out" MANIFEST.XML "${found[@]}")
else
    echo "package.sh: neither python3 nor zip is installed; install one of them" >&2
    exit 1
fi
echo "package.sh: wrote $out (MANIFEST.XML ${found[*]})"
