#!/usr/bin/env bash
# Runs every test, first installing what the tests need where it is missing:
#
#   scripts/test.sh [cargo test arguments...]      e.g. scripts/test.sh --test windows
#
# Installs (each only when missing, so a second run goes straight to `cargo test`):
#   apt:    compilers, valgrind, mingw-w64 (x86_64 and i686), wine (64- and 32-bit, with the
#           i386 architecture added), gcc-multilib (32-bit Linux), binutils, zip, ...
#   rustup: the Windows and 32-bit Linux targets, the nightly toolchain (fuzz smoke),
#           llvm-tools (llvm-profdata: scripts/pgo.sh, which tests/release.rs runs)
#   pip:    ziglang (zig for cargo-zigbuild), pytest and wheel (the Python package)
#   cargo:  cargo-zigbuild, cargo-c (cargo cinstall: the pkg-config test)
#   npm:    koffi in npm's cache (the Node example)
# then runs `cargo test --locked "$@"`, and lists the tests that were skipped (a test whose tool
# could not be installed prints "SKIPPED: <test>: <reason>" and passes without running).
#
# Settings: OPI_TEST_NO_INSTALL=1 skips the installs; OPI_NO_SKIP=1 makes every skip a failure.
# An install that fails (no network, a broken mirror) is reported and the run goes on.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
started=$(date +%s)
say() { printf '[test.sh %3ss] %s\n' "$(( $(date +%s) - started ))" "$*"; }
warn() { say "WARNING: $*" >&2; }

export PATH="$HOME/.cargo/bin:$HOME/.local/bin:$PATH"

SUDO=""
if [ "$(id -u)" != 0 ] && command -v sudo > /dev/null; then SUDO="sudo -n"; fi

# ---- apt ----------------------------------------------------------------------------------
# Each entry is a Debian package (":i386" for the 32-bit wine); what needs it in brackets.
APT_PACKAGES=(
    gcc g++ binutils pkg-config make     # C example, C++ add-in host, objdump (all)
    valgrind                             # memory checks across the boundary (capi, addin)
    libssl-dev                           # building cargo-c (cargo install cargo-c)
    libcurl4-openssl-dev                 # the benchmark's anchor
    nginx-light openssl                  # the benchmark's neutral server and test CA (.ci/run)
    zip unzip ca-certificates            # the add-in zip (addin, glibc, release)
    python3 python3-venv python3-pip     # bindings, the Python package, ziglang
    gcc-mingw-w64-x86-64 wine64          # Windows x64 (windows)
    gcc-mingw-w64-i686 wine32:i386       # Windows x86 under 32-bit wine (windows)
    gcc-multilib g++-multilib            # Linux x86: gcc -m32, g++ -m32 (linux32)
)
APT_LOG="${TMPDIR:-/tmp}/opi-test-apt.log"
# --allow-downgrades: with the pins below, a package can come at the pinned, older version.
apt_opts=(-y -q --no-install-recommends --allow-downgrades -o DPkg::Lock::Timeout=900
    -o Acquire::Retries=3)

installed() { dpkg-query -W -f='${Status}' "$1" 2> /dev/null | grep -q 'install ok installed'; }

# apt-get update, retried: a mirror in sync can serve an index of the wrong size
# ("File has unexpected size") for hours, the i386 security index above all. After three
# tries the run goes on with the indexes apt has.
apt_update() {
    local try
    for try in 1 2 3; do
        if $SUDO apt-get update -q -o DPkg::Lock::Timeout=900 >> "$APT_LOG" 2>&1; then return 0; fi
        warn "apt-get update failed (try $try of 3; see $APT_LOG)"
        sleep $((try * 5))
    done
    warn "going on with the package indexes apt has"
}

# wine32:i386 needs the i386 builds of libraries that are "Multi-Arch: same": their version
# must equal the amd64 one installed. When an i386 index is behind (the security index
# failing, above), apt refuses. Pin each such library to the newest version both
# architectures offer, then install with --allow-downgrades.
PIN_FILE=/etc/apt/preferences.d/opi-openai-multiarch
pin_multiarch_same() {
    local package="$1" closure same pins="" name version common amd64 i386 source
    # The i386 package's dependencies, and the amd64 "Multi-Arch: same" packages installed.
    closure=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
        --no-breaks --no-replaces --no-enhances "$package" 2> /dev/null |
        grep -E '^[a-z0-9]' | sed 's/:i386$//' | sort -u)
    same=$(dpkg-query -W -f='${Package} ${Architecture} ${Multi-Arch} ${Version}\n' |
        awk '$2 == "amd64" && $3 == "same" { print $1, $4 }' | sort)
    same=$(join <(echo "$same") <(echo "$closure"))
    [ -n "$same" ] || return 1
    # Every version either architecture offers, in two calls: "name arch version" lines.
    local offers
    offers=$(apt-cache madison $(awk '{ print $1 ":amd64", $1 ":i386" }' <<< "$same") 2> /dev/null |
        awk -F'|' '{ gsub(/ /, "", $1); gsub(/ /, "", $2); split($3, w, " ");
                     sub(/:i386$/, "", $1); print $1, w[3], $2 }')
    while read -r name version; do
        amd64=$(awk -v n="$name" '$1 == n && $2 == "amd64" { print $3 }' <<< "$offers" | sort -u)
        i386=$(awk -v n="$name" '$1 == n && $2 == "i386" { print $3 }' <<< "$offers" | sort -u)
        # Nothing to do when both architectures' newest versions are the same one.
        [ "$(sort -V <<< "$amd64" | tail -n 1)" != "$(sort -V <<< "$i386" | tail -n 1)" ] || continue
        common=$(comm -12 <(echo "$amd64") <(echo "$i386") | sort -V | tail -n 1)
        [ -n "$common" ] || continue
        # The whole source package (libssl3 with libssl-dev, ...), so that the -dev packages
        # still match their libraries.
        source=$(dpkg-query -W -f='${source:Package}' "$name:amd64" 2> /dev/null)
        pins+="Package: src:${source:-$name}"$'\n'"Pin: version $common"$'\n'"Pin-Priority: 1001"$'\n\n'
        say "apt: pinning $name (source ${source:-$name}) to $common, which both amd64 and i386 offer (amd64 has $version)"
    done <<< "$same"
    [ -n "$pins" ] || return 1
    printf '%s' "$pins" | $SUDO tee "$PIN_FILE" > /dev/null
}

install_apt() {
    local missing=() native=() foreign=() p
    for p in "${APT_PACKAGES[@]}"; do installed "$p" || missing+=("$p"); done
    [ ${#missing[@]} -gt 0 ] || return 0
    if [ "$(id -u)" != 0 ] && [ -z "$SUDO" ]; then
        warn "not root and no sudo: cannot install ${missing[*]}"
        return
    fi
    for p in "${missing[@]}"; do
        if [[ "$p" == *:i386 ]]; then foreign+=("$p"); else native+=("$p"); fi
    done
    say "apt: installing ${missing[*]} (log: $APT_LOG)"
    export DEBIAN_FRONTEND=noninteractive
    if [ ${#foreign[@]} -gt 0 ] && ! dpkg --print-foreign-architectures | grep -qx i386; then
        $SUDO dpkg --add-architecture i386
    fi
    apt_update
    # The native packages first, all at once, else one at a time (so that one package apt
    # cannot install does not stop the others); then the i386 ones, which can need pinning.
    if [ ${#native[@]} -gt 0 ] &&
        ! $SUDO apt-get install "${apt_opts[@]}" "${native[@]}" >> "$APT_LOG" 2>&1; then
        for p in "${native[@]}"; do
            installed "$p" ||
                $SUDO apt-get install "${apt_opts[@]}" "$p" >> "$APT_LOG" 2>&1 ||
                warn "apt could not install $p (see $APT_LOG); the tests that need it are skipped"
        done
    fi
    for p in ${foreign[@]+"${foreign[@]}"}; do
        if $SUDO apt-get install "${apt_opts[@]}" "$p" >> "$APT_LOG" 2>&1; then continue; fi
        if pin_multiarch_same "$p" &&
            $SUDO apt-get install "${apt_opts[@]}" "$p" >> "$APT_LOG" 2>&1; then
            continue
        fi
        warn "apt could not install $p (see $APT_LOG); the tests that need it are skipped"
    done
}

# ---- rustup -------------------------------------------------------------------------------
RUST_TARGETS=(x86_64-pc-windows-gnu i686-pc-windows-gnu i686-unknown-linux-gnu)

install_rust() {
    local have missing=() t
    if ! command -v rustup > /dev/null; then
        warn "rustup not found: cannot add the targets ${RUST_TARGETS[*]}"
        return
    fi
    have=$(rustup target list --installed 2> /dev/null)
    for t in "${RUST_TARGETS[@]}"; do grep -qx "$t" <<< "$have" || missing+=("$t"); done
    if [ ${#missing[@]} -gt 0 ]; then
        say "rustup: adding ${missing[*]}"
        rustup target add "${missing[@]}" > /dev/null || warn "rustup target add failed"
    fi
    if ! rustup component list --installed 2> /dev/null | grep -q '^clippy'; then
        rustup component add rustfmt clippy > /dev/null 2>&1 || true
    fi
    if ! rustup component list --installed 2> /dev/null | grep -q '^llvm-tools'; then
        say "rustup: adding llvm-tools (llvm-profdata, for the PGO profile)"
        rustup component add llvm-tools > /dev/null 2>&1 || warn "rustup could not add llvm-tools"
    fi
    # The nightly toolchain: the fuzz smoke (cargo +nightly fuzz) needs it.
    if ! rustup toolchain list 2> /dev/null | grep -q '^nightly'; then
        say "rustup: installing the nightly toolchain"
        rustup toolchain install nightly --profile minimal > /dev/null ||
            warn "rustup could not install nightly"
    fi
}

# ---- Python: ziglang (zig for cargo-zigbuild), pytest --------------------------------------
ZIG_VERSION=0.15.2
PIP_QUIET=(--quiet --disable-pip-version-check --root-user-action=ignore)

# pip_install VENV PACKAGE...: pip --user, or, where the system Python refuses it (PEP 668),
# a venv under target/ whose python is printed on stdout.
pip_install() {
    local venv="$1"
    shift
    if python3 -m pip install --user --no-warn-script-location "${PIP_QUIET[@]}" "$@" > /dev/null 2>&1; then
        echo python3
        return
    fi
    say "pip --user refused; installing $* into $venv" >&2
    if [ ! -x "$venv/bin/python3" ]; then python3 -m venv "$venv" >&2 || return 1; fi
    "$venv/bin/pip" install "${PIP_QUIET[@]}" "$@" >&2 || return 1
    echo "$venv/bin/python3"
}

install_python() {
    local venv=target/ziglang-venv python
    if [ -z "${CARGO_ZIGBUILD_PYTHON_PATH:-}" ] && [ -x "$venv/bin/python3" ] &&
        [ "$("$venv/bin/python3" -m ziglang version 2> /dev/null)" = "$ZIG_VERSION" ]; then
        export CARGO_ZIGBUILD_PYTHON_PATH="$PWD/$venv/bin/python3"
    fi
    if [ "$("${CARGO_ZIGBUILD_PYTHON_PATH:-python3}" -m ziglang version 2> /dev/null)" != "$ZIG_VERSION" ]; then
        say "pip: installing ziglang==$ZIG_VERSION"
        if python=$(pip_install "$venv" "ziglang==$ZIG_VERSION"); then
            [ "$python" = python3 ] || export CARGO_ZIGBUILD_PYTHON_PATH="$PWD/$python"
        else
            warn "could not install ziglang"
        fi
    fi
    # pytest: the Python package's tests (tests/python_pkg.rs runs them in a venv that sees
    # this Python's packages, so nothing is downloaded during the tests). OPI_PYTHON names
    # the Python to use when it is not python3.
    if [ -z "${OPI_PYTHON:-}" ] && [ -x target/pytest-venv/bin/python3 ]; then
        export OPI_PYTHON="$PWD/target/pytest-venv/bin/python3"
    fi
    # wheel: pip builds the package with setuptools, which before 70.1 needs it.
    if ! "${OPI_PYTHON:-python3}" -c 'import pytest, setuptools, wheel' > /dev/null 2>&1; then
        say "pip: installing pytest, setuptools and wheel"
        if python=$(pip_install target/pytest-venv pytest setuptools wheel); then
            [ "$python" = python3 ] || export OPI_PYTHON="$PWD/$python"
        else
            warn "could not install pytest"
        fi
    fi
}

# ---- cargo tools --------------------------------------------------------------------------
ZIGBUILD_VERSION=0.24.1
CARGO_C_VERSION=0.10.24

install_cargo_tools() {
    if [ "$(cargo-zigbuild --version 2> /dev/null)" != "cargo-zigbuild $ZIGBUILD_VERSION" ]; then
        say "cargo: installing cargo-zigbuild $ZIGBUILD_VERSION"
        cargo install cargo-zigbuild --version "$ZIGBUILD_VERSION" --locked --quiet ||
            warn "could not install cargo-zigbuild"
    fi
    if ! cargo cinstall --version 2> /dev/null | grep -q "$CARGO_C_VERSION"; then
        say "cargo: installing cargo-c $CARGO_C_VERSION (a few minutes, once)"
        cargo install cargo-c --version "$CARGO_C_VERSION" --locked --quiet ||
            warn "could not install cargo-c"
    fi
}

# ---- npm: koffi, for the Node example (tests/bindings.rs installs it from npm's cache) -----
install_npm() {
    command -v npm > /dev/null || { warn "npm not found: the Node example is skipped"; return; }
    local warm=target/npm-warm
    [ -d "$warm/node_modules/koffi" ] && return
    say "npm: fetching koffi into npm's cache"
    mkdir -p "$warm" && cp examples/node/package.json "$warm/" &&
        (cd "$warm" && npm install --no-audit --no-fund --silent > /dev/null 2>&1) ||
        warn "npm install of koffi failed"
}

if [ "${OPI_TEST_NO_INSTALL:-0}" != 1 ]; then
    install_apt
    install_rust
    install_python
    install_cargo_tools
    install_npm
    say "set-up done"
fi

# ---- the tests ----------------------------------------------------------------------------
log="${TMPDIR:-/tmp}/opi-test-$$.log"
cargo test --locked "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
skipped=$(grep -c '^SKIPPED: ' "$log")
if [ "$skipped" -gt 0 ]; then
    say "$skipped test(s) SKIPPED (something they need is missing on this machine):"
    grep '^SKIPPED: ' "$log" | sort -u | sed 's/^/    /'
fi
rm -f "$log"
say "cargo test exited $status"
exit "$status"
