#!/usr/bin/env bash
# Builds the release into dist/:
#   OPI_OpenAI.zip     the 1C add-in as 1C:Enterprise and OneScript attach it
#                      (AttachAddIn("<path>/OPI_OpenAI.zip", "OPI_OpenAI", AddInType.Native)):
#                      MANIFEST.XML naming exactly the libraries present, and
#                      AddIn_x64_windows.dll  x86_64-pc-windows-gnu          (mingw-w64)
#                      AddIn_x86_windows.dll  i686-pc-windows-gnu            (mingw-w64)
#                      AddIn_x64_linux.so     x86_64-unknown-linux-gnu.2.17  (cargo-zigbuild)
#                      AddIn_x86_linux.so     i686-unknown-linux-gnu.2.17    (cargo-zigbuild)
#                      The Linux libraries need glibc 2.17 or newer (CentOS 7 and later).
#                      AddIn_x64_linux.so is built with profile-guided optimisation when
#                      this machine is x86_64 Linux: scripts/pgo.sh --zig makes the profile
#                      (a training run against a local server) and the build uses it; it
#                      goes to target/pgo/build-zig. OPI_PGO=0 builds it without.
#   opi_openai-VERSION-PLATFORM.tar.gz (Linux) / .zip (Windows), one per platform built:
#                      the C SDK: include/opi_openai.h, lib/ (shared and static library,
#                      pkgconfig/opi_openai.pc), README.md (the C part), LICENSE
#   SHA256SUMS         of the files above
#
# Usage: scripts/release.sh [--out DIR] [--no-build] [--zip-only FILE]
#   --out DIR        where to write (default: dist/)
#   --no-build       build nothing; package what is already built under the target directory
#   --zip-only FILE  write only the add-in zip, to FILE (examples/1c/package.sh does this)
# A library can be named explicitly: OPI_ADDIN_X64_WINDOWS, OPI_ADDIN_X86_WINDOWS,
# OPI_ADDIN_X64_LINUX, OPI_ADDIN_X86_LINUX (then that file is zipped and not built).
#
# Needs: rustup targets x86_64-pc-windows-gnu, i686-pc-windows-gnu, x86_64-unknown-linux-gnu,
# i686-unknown-linux-gnu; mingw-w64 (Debian: gcc-mingw-w64-x86-64, gcc-mingw-w64-i686);
# cargo-zigbuild and zig (pip install ziglang); python3 or zip; scripts/test.sh installs them.
# A target that cannot be built is reported in one line and the others are still built, and
# so is a profile that cannot be made (the library is then built without it).
# Exit status: 0 when all four add-in libraries are in the zip, 1 when some are missing,
# 2 on bad usage or when nothing could be packaged.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
out="$root/dist"
build=1
zip_only=""

while [ $# -gt 0 ]; do
    case "$1" in
        --out) out="${2:?--out needs a folder}"; shift ;;
        --no-build) build=0 ;;
        --zip-only) zip_only="${2:?--zip-only needs a file name}"; shift ;;
        -h | --help) sed -n '2,/^set -euo/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "release.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

say() { echo "release.sh: $*"; }
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -n 1)
logs="$target_dir/release-logs"
mkdir -p "$logs"

# The four platforms: zip name, Rust target, the target cargo-zigbuild is given (Linux: with
# the glibc floor), SDK platform name.
PLATFORMS=(
    "AddIn_x64_windows.dll x86_64-pc-windows-gnu - x86_64-windows OPI_ADDIN_X64_WINDOWS"
    "AddIn_x86_windows.dll i686-pc-windows-gnu - i686-windows OPI_ADDIN_X86_WINDOWS"
    "AddIn_x64_linux.so x86_64-unknown-linux-gnu x86_64-unknown-linux-gnu.2.17 x86_64-linux-gnu OPI_ADDIN_X64_LINUX"
    "AddIn_x86_linux.so i686-unknown-linux-gnu i686-unknown-linux-gnu.2.17 i686-linux-gnu OPI_ADDIN_X86_LINUX"
)

have() { command -v "$1" > /dev/null 2>&1; }

# why_not TRIPLE ZIGTARGET: prints why this machine cannot build the target, if it cannot.
why_not() {
    local triple="$1" zig="$2"
    if [ ! -d "$(rustc --print sysroot)/lib/rustlib/$triple" ]; then
        echo "the Rust target is not installed (rustup target add $triple)"
    elif [ "$zig" = - ]; then
        local gcc="${triple%%-*}-w64-mingw32-gcc"
        have "$gcc" || echo "$gcc is not installed (Debian: gcc-mingw-w64-$(echo "${triple%%-*}" | tr _ -))"
    elif ! cargo-zigbuild --version > /dev/null 2>&1; then
        echo "cargo-zigbuild is not installed (cargo install cargo-zigbuild --locked)"
    elif ! "${CARGO_ZIGBUILD_PYTHON_PATH:-python3}" -m ziglang version > /dev/null 2>&1 &&
        ! "${CARGO_ZIGBUILD_ZIG_PATH:-zig}" version > /dev/null 2>&1; then
        echo "zig is not installed (pip install ziglang)"
    fi
}

# Profile-guided optimisation: the target it applies to (this machine's, when x86_64 Linux),
# and the folder its build goes to (apart, so that tests/glibc.rs's plain build of the same
# target and this one do not rebuild each other).
pgo_triple=""
if [ "${OPI_PGO:-1}" != 0 ] && [ "$(rustc -vV | sed -n 's/^host: //p')" = x86_64-unknown-linux-gnu ]; then
    pgo_triple=x86_64-unknown-linux-gnu
fi
pgo_dir="$target_dir/pgo/build-zig" # where `scripts/pgo.sh --zig` builds too
pgo_flags=""

# The folder a target's build goes to.
dir_of() {
    if [ "$1" = "$pgo_triple" ]; then echo "$pgo_dir/$1/release"; else echo "$target_dir/$1/release"; fi
}
# The library files of a target's release build.
shared_of() {
    case "$1" in
        *windows*) echo "$(dir_of "$1")/opi_openai.dll" ;;
        *) echo "$(dir_of "$1")/libopi_openai.so" ;;
    esac
}
static_of() { echo "$(dir_of "$1")/libopi_openai.a"; }

# make_profile ZIGTARGET: makes the profile (once) and sets pgo_flags; says so when it cannot,
# and the library is then built without.
make_profile() {
    [ -z "$pgo_flags" ] || return 0
    say "making the PGO profile (scripts/pgo.sh --profile-only --zig $1; log: $logs/pgo.log)"
    if "$root/scripts/pgo.sh" --profile-only --zig "$1" > "$logs/pgo.log" 2>&1; then
        pgo_flags="$(sed -n 's/^pgo.sh: RUSTFLAGS=//p' "$logs/pgo.log" | tail -n 1)"
    fi
    if [ -z "$pgo_flags" ]; then
        say "warning: no PGO profile ($(grep -m 1 -v '^pgo.sh: [0-9]' "$logs/pgo.log" | head -c 300)):" \
            "AddIn_x64_linux.so is built WITHOUT profile-guided optimisation" >&2
    fi
}

# build TRIPLE ZIGTARGET: the shared library (exactly as the tests build it, so that neither
# rebuilds the other's), then the static one. Output goes to a log; returns cargo's status.
build() {
    local triple="$1" zig="$2" log="$logs/$1.log"
    local common=(--lib --release --no-default-features --locked)
    : > "$log"
    if [ "$triple" = "$pgo_triple" ]; then
        make_profile "$zig"
        if [ -n "$pgo_flags" ]; then
            common+=(--target-dir "$pgo_dir")
            say "$triple: profile-guided ($pgo_flags)"
        else
            pgo_triple="" # built and looked for where the other targets are
        fi
    fi
    (
        cd "$root"
        if [ "$triple" = "$pgo_triple" ]; then export RUSTFLAGS="$pgo_flags"; fi
        if [ "$zig" = - ]; then
            cargo build "${common[@]}" --target "$triple" &&
                cargo rustc "${common[@]}" --target "$triple" --crate-type staticlib \
                    -- --print native-static-libs
        else
            cargo zigbuild "${common[@]}" --target "$zig" &&
                cargo-zigbuild rustc "${common[@]}" --target "$zig" --crate-type staticlib \
                    -- --print native-static-libs
        fi
    ) >> "$log" 2>&1
}

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/zip"
zipped=()
sdk_platforms=()

for entry in "${PLATFORMS[@]}"; do
    read -r name triple zig platform var <<< "$entry"
    given="${!var:-}"
    if [ -n "$given" ]; then
        if [ ! -f "$given" ]; then
            echo "release.sh: $var names no file: $given" >&2
            exit 2
        fi
        cp "$given" "$stage/zip/$name"
        zipped+=("$name")
        say "$name <- $given"
        continue
    fi
    if [ "$build" = 1 ]; then
        why="$(why_not "$triple" "$zig")"
        if [ -n "$why" ]; then
            say "$name ($triple): not built: $why"
            continue
        fi
        say "building $triple (log: $logs/$triple.log)"
        if ! build "$triple" "$zig"; then
            say "$name ($triple): not built: the build failed: $(grep -m 1 -E '^error' "$logs/$triple.log" || tail -n 1 "$logs/$triple.log")"
            continue
        fi
    fi
    lib="$(shared_of "$triple")"
    if [ ! -f "$lib" ]; then
        say "$name ($triple): not built (no $lib)"
        continue
    fi
    cp "$lib" "$stage/zip/$name"
    zipped+=("$name")
    [ -f "$(static_of "$triple")" ] && sdk_platforms+=("$triple $platform")
done

if [ ${#zipped[@]} = 0 ]; then
    say "no add-in library was built or given: nothing to package" >&2
    exit 2
fi

# The oldest glibc each Linux library loads on: the highest GLIBC_ version it requires.
for name in "${zipped[@]}"; do
    [[ "$name" == *.so ]] || continue
    if ! have objdump; then
        say "warning: cannot check the glibc $name needs (no objdump)" >&2
        continue
    fi
    glibc="$(objdump -p "$stage/zip/$name" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' |
        sort -uV | tail -n 1)"
    case "${glibc:-unknown}" in
        2.1[0-7] | 2.1[0-7].* | 2.[0-9] | 2.[0-9].*) say "$name needs glibc $glibc or newer" ;;
        *) say "warning: $name needs glibc ${glibc:-unknown} or newer, not 2.17" \
            "(old 1C servers such as CentOS 7 cannot load it); build it with cargo-zigbuild" >&2 ;;
    esac
done

# The manifest lists exactly the libraries in the zip: 1C refuses a bundle whose manifest
# names a missing file.
awk -v names="${zipped[*]}" '
    BEGIN { n = split(names, list, " "); for (i = 1; i <= n; i++) keep[list[i]] = 1 }
    /<component / {
        match($0, /path="[^"]*"/)
        path = substr($0, RSTART + 6, RLENGTH - 7)
        if (!(path in keep)) next
    }
    { print }
' "$root/examples/1c/MANIFEST.XML" > "$stage/zip/MANIFEST.XML"

# make_zip OUT DIR NAME...: a zip of DIR/NAME... (paths kept relative to DIR).
make_zip() {
    local zip="$1" dir="$2"
    shift 2
    rm -f "$zip"
    if have python3; then
        python3 - "$zip" "$dir" "$@" << 'PY'
import os, sys, zipfile
out, base, names = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
    for name in names:
        path = os.path.join(base, name)
        if os.path.isdir(path):
            for d, _, files in sorted(os.walk(path)):
                for f in sorted(files):
                    full = os.path.join(d, f)
                    z.write(full, os.path.relpath(full, base))
        else:
            z.write(path, name)
PY
    elif have zip; then
        (cd "$dir" && zip -q -X -r "$zip" "$@")
    else
        echo "release.sh: neither python3 nor zip is installed; install one of them" >&2
        exit 2
    fi
}

if [ -n "$zip_only" ]; then
    mkdir -p "$(dirname "$zip_only")"
    zip_only="$(cd "$(dirname "$zip_only")" && pwd)/$(basename "$zip_only")"
    make_zip "$zip_only" "$stage/zip" MANIFEST.XML "${zipped[@]}"
    say "wrote $zip_only (MANIFEST.XML ${zipped[*]})"
    [ ${#zipped[@]} = 4 ]
    exit
fi

mkdir -p "$out"
out="$(cd "$out" && pwd)"
rm -f "$out/OPI_OpenAI.zip" "$out/SHA256SUMS" "$out"/opi_openai-*
make_zip "$out/OPI_OpenAI.zip" "$stage/zip" MANIFEST.XML "${zipped[@]}"
say "wrote $out/OPI_OpenAI.zip (MANIFEST.XML ${zipped[*]})"

# The C part of README.md, for the SDKs: from "## C" to the next "## ".
readme_excerpt() {
    echo "# opi_openai $version: the C SDK"
    echo
    echo "Compile and link with \`pkg-config --cflags --libs opi_openai\` (PKG_CONFIG_PATH=<this"
    echo "folder>/lib/pkgconfig; add --static for the static library), or -Iinclude -Llib -lopi_openai."
    echo
    awk '/^## C$/ { on = 1 } /^## / && !/^## C$/ { on = 0 } on' "$root/README.md"
}

# The system libraries a static link needs, as rustc printed them when it built the static
# library (kept beside it: a build that was up to date prints nothing).
static_libs() {
    local saved found
    saved="$(dir_of "$1")/native-static-libs.txt"
    found=$(grep -o 'native-static-libs: .*' "$logs/$1.log" 2> /dev/null | tail -n 1 |
        sed 's/native-static-libs: //')
    if [ -n "$found" ]; then echo "$found" > "$saved"; fi
    cat "$saved" 2> /dev/null || true
}

for entry in ${sdk_platforms[@]+"${sdk_platforms[@]}"}; do
    read -r triple platform <<< "$entry"
    sdk="opi_openai-$version-$platform"
    dir="$stage/$sdk"
    mkdir -p "$dir/include" "$dir/lib/pkgconfig"
    cp "$root/include/opi_openai.h" "$dir/include/"
    cp "$(shared_of "$triple")" "$(static_of "$triple")" "$dir/lib/"
    implib="$(dir_of "$triple")/libopi_openai.dll.a"
    [ -f "$implib" ] && cp "$implib" "$dir/lib/"
    cp "$root/LICENSE" "$dir/"
    readme_excerpt > "$dir/README.md"
    cat > "$dir/lib/pkgconfig/opi_openai.pc" << EOF
prefix=\${pcfiledir}/../..
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: opi_openai
Description: OPI's GetImages, natively: images through any OpenAI-compatible server
Version: $version
Libs: -L\${libdir} -lopi_openai
Libs.private: $(static_libs "$triple")
Cflags: -I\${includedir}
EOF
    case "$platform" in
        *windows*) make_zip "$out/$sdk.zip" "$stage" "$sdk" && file="$sdk.zip" ;;
        *) tar -czf "$out/$sdk.tar.gz" -C "$stage" "$sdk" && file="$sdk.tar.gz" ;;
    esac
    say "wrote $out/$file"
done

(cd "$out" && sha256sum OPI_OpenAI.zip opi_openai-* > SHA256SUMS 2> /dev/null ||
    sha256sum OPI_OpenAI.zip > SHA256SUMS)
say "wrote $out/SHA256SUMS"

if [ ${#zipped[@]} = 4 ]; then
    say "all four add-in libraries are in the zip"
else
    say "the zip holds ${#zipped[@]} of the four add-in libraries: ${zipped[*]}"
    exit 1
fi
