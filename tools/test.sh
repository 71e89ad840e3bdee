#!/usr/bin/env bash
# The whole test suite in one command: system packages, formatting, lints, tests, loom models.
#
#   tools/test.sh            everything
#   tools/test.sh --quick    everything but the loom model checks
#   GISMO_SOAK=1 tools/test.sh   also the long soaks (2000 kill -9 recoveries, every memory_copy
#                                strategy's exhaustive sweep); off by default
#
# Usable on a fresh Debian 12 machine as root (with a Rust toolchain >= the workspace's
# rust-version, plus rustfmt and clippy). Idempotent. Every step runs even when an earlier one
# failed (and `cargo test` runs every test binary even when one fails); the summary lists each
# step, and the last line is "N passed, M failed" (steps).
# Exits non-zero if any step failed.
#
# Every step runs with its own fresh, empty TMPDIR (and Ray temp root, RAY_TMPDIR) under one
# suite directory that is removed on exit, so that state left by an earlier run can never stand
# in for a missing set-up step; a last step fails if the suite left anything behind (regions in
# /dev/shm, processes). Every Ray process listens on loopback only.
set -euo pipefail

# System packages the tests need. Later suites add theirs here, e.g. redis-server.
# qemu-system-x86 busybox-static ndctl daxctl cpio kmod: the two-guest QEMU test
# (gismo-server/tests/qemu.rs).
# redis-server redis-tools: the redis plugin tests (plugins/redis/tests/redis.rs) start a server,
# use redis-cli.
SYSTEM_PACKAGES=(qemu-system-x86 busybox-static ndctl daxctl cpio kmod redis-server redis-tools)

usage() {
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
}

quick=0
for arg in "$@"; do
    case "$arg" in
        --quick) quick=1 ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            echo "test.sh: unknown argument '$arg' (try --help)" >&2
            exit 2
            ;;
    esac
done

cd "$(dirname "$0")/.."

# Installs the missing packages of SYSTEM_PACKAGES with apt-get (running `apt-get update` first,
# and only when something is missing).
install_system_packages() {
    local missing=() pkg
    for pkg in "${SYSTEM_PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$pkg")
        fi
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        echo "system packages: nothing to install"
        return 0
    fi
    echo "system packages: installing ${missing[*]}"
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null; then
            sudo=(sudo)
        else
            echo "test.sh: not root and no sudo: install ${missing[*]} by hand" >&2
            return 1
        fi
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -q
    "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# Checks that cargo, rustfmt and clippy are there (a toolchain cannot be installed from here:
# Debian's own cargo is older than the workspace's rust-version).
check_toolchain() {
    if ! command -v cargo >/dev/null; then
        echo "test.sh: cargo not found: install a Rust toolchain (rustup, stable)" >&2
        return 1
    fi
    local component
    for component in fmt clippy; do
        if ! cargo "$component" --version >/dev/null 2>&1; then
            if command -v rustup >/dev/null; then
                local name=$component
                [ "$component" = fmt ] && name=rustfmt
                rustup component add "$name"
            else
                echo "test.sh: cargo $component is missing (rustup component add ...)" >&2
                return 1
            fi
        fi
    done
    cargo --version
}

step_names=()
step_results=()
step_seconds=()

# One directory for everything the suite writes outside target/; short, because Ray's socket
# paths under it must fit sockaddr_un (108 bytes).
suite_tmp=$(mktemp -d /tmp/gt.XXXXXX)
trap 'rm -rf "$suite_tmp"' EXIT
# Ray (tests and benchmarks started from here): 127.0.0.1 for every node, driver and worker.
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
shm_before=$(ls -1 /dev/shm 2>/dev/null | sort)

# run_step NAME COMMAND...: runs one step with a fresh TMPDIR, records its result, never stops
# the script.
run_step() {
    local name=$1
    shift
    echo
    echo "==> $name"
    local start=$SECONDS status=0
    local step_tmp="$suite_tmp/${#step_names[@]}"
    mkdir -p "$step_tmp"
    TMPDIR="$step_tmp" RAY_TMPDIR="$step_tmp" "$@" || status=$?
    # A step that leaves a mount under its TMPDIR fails (it leaked), and the suite goes on: the
    # mount is detached lazily so that the directory can go.
    if ! rm -rf "$step_tmp" 2>/dev/null; then
        echo "!! $name left a mount (or a busy file) under its TMPDIR:" >&2
        grep -F " $step_tmp" /proc/mounts >&2 || true
        { grep -F " $step_tmp" /proc/mounts || true; } | awk '{print $2}' | sort -r |
            while read -r m; do umount -l "$m" || true; done || true
        rm -rf "$step_tmp" || true
        [ "$status" -ne 0 ] || status=125
    fi
    step_names+=("$name")
    step_seconds+=($((SECONDS - start)))
    if [ "$status" -eq 0 ]; then
        step_results+=(passed)
    else
        step_results+=("FAILED (exit $status)")
    fi
}

loom_tests() {
    RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 \
        CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/loom" \
        cargo test --release -p gismo-core --test loom
}

run_step "system packages" install_system_packages
run_step "toolchain" check_toolchain
run_step "cargo fmt --check" cargo fmt --all -- --check
run_step "cargo clippy" cargo clippy --workspace --all-targets -- -D warnings
# The plugin tests load `target/debug/libgismo.so`, which `cargo test` alone does not link (it
# builds the library as an rlib for the tests): build every target first.
workspace_tests() {
    cargo build --workspace --all-features && cargo test --workspace --all-features --no-fail-fast
}

run_step "cargo test" workspace_tests
# Release-mode tests too slow for a debug build: every (length, misalignment) copy up to 4160
# bytes for the strategies this machine uses.
exhaustive_copies() {
    cargo test --release -p gismo-platform --lib every_triple_up_to_4160_detected -- --ignored
}

soak_tests() {
    GISMO_SOAK=1 cargo test --release -p gismo --test recovery random_kill_points -- --nocapture &&
        cargo test --release -p gismo-platform --lib every_triple_up_to_4160 -- --ignored --exact \
            coherence::tests::every_triple_up_to_4160
}

# Two QEMU guests (TCG) share one file as /dev/dax0.0 and exchange objects; the host checks them
# (tools/qemu/run.sh, docs/qemu.md). Needs the release binaries the test boots the guests with.
qemu_guests() {
    cargo build --release -p gismoctl -p gismo-server &&
        cargo test --release -p gismo-server --test qemu -- --ignored --nocapture
}

# Ray tier: Ray from the Python registry in a private venv (tools/ray-venv.sh); our plasma
# client against a real raylet's plasma store (plugins/plasma/tests/ray_plasma.rs).
ray_plasma_wire() {
    local venv
    venv=$(bash tools/ray-venv.sh) &&
        GISMO_RAY_VENV="$venv" cargo test -p gismo-plasma --test ray_plasma -- --ignored --nocapture
}

# The Python package (python/, docs/python.md): rustfmt and clippy on its extension crate (not a
# workspace member: it needs a Python interpreter), `maturin develop` into the Ray venv, then its
# pytest tier — the core API, and gismo.ray in a two-raylet Ray cluster on this machine.
python_package() {
    local venv target=${CARGO_TARGET_DIR:-$PWD/target}/python
    venv=$(bash tools/ray-venv.sh) || return 1
    (
        cd python &&
            export CARGO_TARGET_DIR="$target" VIRTUAL_ENV="$venv" PYO3_PYTHON="$venv/bin/python" &&
            cargo fmt -- --check &&
            cargo clippy --all-targets -- -D warnings &&
            "$venv/bin/maturin" develop -q &&
            "$venv/bin/python" -m pytest -q tests
    )
}

run_step "exhaustive memory_copy" exhaustive_copies
run_step "qemu two guests" qemu_guests
run_step "ray plasma wire" ray_plasma_wire
run_step "python package + ray cluster" python_package
if [ "$quick" -eq 1 ]; then
    echo
    echo "==> loom model checks: skipped (--quick)"
else
    run_step "loom model checks" loom_tests
fi
if [ "${GISMO_SOAK:-0}" = 1 ]; then
    run_step "soak tests" soak_tests
fi

# Nothing the suite created may outlive it: no region or segment left in /dev/shm, no process
# (Ray, redis-server, helpers) still running from the suite's temp dirs.
nothing_left_behind() {
    local left=0 new procs
    new=$(comm -13 <(printf '%s\n' "$shm_before") <(ls -1 /dev/shm 2>/dev/null | sort) | grep -v '^$' || true)
    if [ -n "$new" ]; then
        echo "left in /dev/shm:"
        printf '  %s\n' $new
        left=1
    fi
    procs=$(pgrep -af -- "$suite_tmp" | grep -v -e pgrep || true)
    if [ -n "$procs" ]; then
        echo "still running:"
        printf '  %s\n' "$procs"
        left=1
    fi
    [ "$left" -eq 0 ] && echo "nothing left behind"
    return "$left"
}
run_step "nothing left behind" nothing_left_behind

passed=0
failed=0
echo
echo "==> summary"
for i in "${!step_names[@]}"; do
    printf '  %-30s %-18s %5ss\n' "${step_names[$i]}" "${step_results[$i]}" "${step_seconds[$i]}"
    if [ "${step_results[$i]}" = passed ]; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
    fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
