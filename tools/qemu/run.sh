#!/usr/bin/env bash
# Two QEMU guests share one host file as an NVDIMM (/dev/dax0.0) and run GISMO on it; then the
# host reads the same objects from the file. See docs/qemu.md.
#
#   tools/qemu/run.sh --bin-dir DIR [--build-dir DIR] [--timeout SECS] [--accel tcg|kvm] [--cxl]
#
# --bin-dir    directory holding release builds of gismoctl and gismo-server (required)
# --build-dir  kernel cache, initramfs, shared file and logs (default: tools/qemu/build)
# --timeout    seconds each guest may run before it is killed (default: 300)
# --accel      tcg (default) or kvm; kvm is used only if a probe guest boots with it
# --cxl        also try the CXL type-3 route once (informational; never fails the run)
#
# Exit status 0 when both guests passed and the host saw every object intact; the logs stay in
# BUILD/logs (guest-a.log, guest-b.log, host.log).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
bin_dir=
build_dir=$here/build
guest_timeout=300
accel=tcg
try_cxl=0

while [ $# -gt 0 ]; do
    case "$1" in
        --bin-dir) bin_dir=$2; shift 2 ;;
        --build-dir) build_dir=$2; shift 2 ;;
        --timeout) guest_timeout=$2; shift 2 ;;
        --accel) accel=$2; shift 2 ;;
        --cxl) try_cxl=1; shift ;;
        -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "run.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
done
[ -n "$bin_dir" ] || { echo "run.sh: --bin-dir is required" >&2; exit 2; }
bin_dir=$(cd "$bin_dir" && pwd)
mkdir -p "$build_dir"
build_dir=$(cd "$build_dir" && pwd)
logs=$build_dir/logs
rm -rf "$logs"
mkdir -p "$logs"

start=$SECONDS
say() { echo "run.sh [$((SECONDS - start))s]: $*"; }
die() { echo "run.sh: FAILED: $*" >&2; exit 1; }

# Every QEMU we start is killed on the way out, whatever happens.
qemu_pids=()
cleanup() {
    local pid
    for pid in "${qemu_pids[@]:-}"; do
        [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- guest -------------------------------------------------------------------------------------
say "building the guest"
eval "$("$here/build-guest.sh" --bin-dir "$bin_dir" --build-dir "$build_dir")"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found"
say "kernel $KERNEL"

# --- accelerator ---------------------------------------------------------------------------------
if [ "$accel" = kvm ]; then
    # KVM only if a guest boots with it (on this project's machines /dev/kvm is a nested flavour
    # that cannot run the Debian kernel: see docs/qemu.md).
    say "probing KVM"
    probe_log=$logs/kvm-probe.log
    timeout 60 qemu-system-x86_64 -accel kvm -cpu host -smp 1 -m 256M \
        -kernel "$KERNEL" -initrd "$INITRD" -append "console=ttyS0 quiet panic=-1 gismo.role=probe" \
        -display none -serial "file:$probe_log" -monitor none -no-reboot >/dev/null 2>&1 || true
    if grep -q 'GISMO-STEP boot' "$probe_log" 2>/dev/null; then
        say "KVM boots: using it"
    else
        say "KVM probe did not reach /init: using TCG"
        accel=tcg
    fi
fi

# --- shared file ----------------------------------------------------------------------------------
shared=$build_dir/shared.img
rm -f "$shared"
truncate -s 256M "$shared"

# boot_guest ROLE: starts one guest in the background, its serial console in logs/guest-ROLE.log.
boot_guest() {
    local role=$1 log=$logs/guest-$1.log
    : >"$log"
    # Under TCG, maxcpus=2 (with thread=multi) makes QEMU translate the guest's atomic
    # instructions into host atomics (CF_PARALLEL). With one possible vCPU it emits plain
    # load-compare-store sequences, which are atomic within one QEMU but not against the other
    # guest's QEMU: a compare-and-swap racing with the other guest then loses updates.
    local accel_opt=$accel
    [ "$accel" = tcg ] && accel_opt=tcg,thread=multi
    qemu-system-x86_64 -accel "$accel_opt" -smp 1,maxcpus=2 \
        -machine pc,nvdimm=on -m 512M,slots=2,maxmem=4G \
        -object "memory-backend-file,id=mem1,share=on,mem-path=$shared,size=256M" \
        -device nvdimm,id=nv1,memdev=mem1 \
        -kernel "$KERNEL" -initrd "$INITRD" \
        -append "console=ttyS0 quiet panic=-1 gismo.role=$role" \
        -display none -serial "file:$log" -monitor none -no-reboot \
        >"$logs/qemu-$role.out" 2>&1 &
    qemu_pids+=($!)
    eval "pid_$role=$!"
}

# wait_for ROLE PATTERN SECS: waits for a line in the guest's log; fails on FAIL or QEMU exit.
wait_for() {
    local role=$1 pattern=$2 secs=$3 log=$logs/guest-$1.log pid
    eval "pid=\$pid_$role"
    local deadline=$((SECONDS + secs))
    while ! grep -q -- "$pattern" "$log"; do
        if grep -q 'GISMO-FAIL\|GISMO-RESULT FAIL' "$log"; then
            sed 's/^/  | /' "$log" >&2
            die "guest $role failed"
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            sed 's/^/  | /' "$log" >&2
            cat "$logs/qemu-$role.out" >&2
            die "guest $role exited before '$pattern'"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            sed 's/^/  | /' "$log" >&2
            die "guest $role: no '$pattern' within ${secs}s"
        fi
        sleep 0.2
    done
}

say "booting guest A (accel $accel)"
boot_guest a
wait_for a 'GISMO-STEP boot' 120
say "guest A reached /init"
wait_for a 'GISMO-STEP server-started' 180
say "guest A formatted the region and started its server; booting guest B"
boot_guest b
wait_for b 'GISMO-STEP server-started' 180
say "guest B started its server"
wait_for b 'GISMO-STEP checked .* objects of aa' "$guest_timeout"
say "guest B read and checked A's objects"
wait_for a 'GISMO-STEP checked .* objects of bb' "$guest_timeout"
say "guest A read and checked B's objects"
wait_for b 'GISMO-STEP killed put' "$guest_timeout"
say "guest B killed a client mid-put"
wait_for a 'GISMO-RESULT PASS' "$guest_timeout"
say "guest A passed"
wait_for b 'GISMO-RESULT PASS' "$guest_timeout"
say "guest B passed"
for role in a b; do
    eval "pid=\$pid_$role"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
done
grep -h 'GISMO-NOTE' "$logs"/guest-*.log | sed 's/^/  /' || true

# --- what the two guests listed -------------------------------------------------------------------
ls_of() { sed -n '/GISMO-LS-BEGIN/,/GISMO-LS-END/p' "$1" | sed '1d;$d' | tr -d '\r'; }
ls_of "$logs/guest-a.log" >"$logs/ls-a.txt"
ls_of "$logs/guest-b.log" >"$logs/ls-b.txt"
diff -u "$logs/ls-a.txt" "$logs/ls-b.txt" || die "guests A and B list different objects"
say "guests A and B list the same $(($(wc -l <"$logs/ls-a.txt") - 1)) objects"

# --- the host reads the same file -------------------------------------------------------------------
# /dev/dax0.0 starts 2 MiB into the file (devdax info block, --map=mem): the host maps the same
# file from there, live, as the guests' /dev/dax0.0.
ctl=("$bin_dir/gismoctl" --region "file:$shared" --region-offset 2MiB)
"${ctl[@]}" ls 2>&1 | tr -d '\r' >"$logs/ls-host.txt"
{
    "${ctl[@]}" stat
    "${ctl[@]}" ls
} >"$logs/host.log" 2>&1 || { cat "$logs/host.log" >&2; die "the host cannot open the shared file at +2 MiB"; }
if "${ctl[@]}" --help | grep -q '^ *fsck'; then
    "${ctl[@]}" fsck >>"$logs/host.log" 2>&1 || { cat "$logs/host.log" >&2; die "host: gismoctl fsck of the shared file failed"; }
    say "host: $(tail -n1 "$logs/host.log")"
fi
diff -u "$logs/ls-a.txt" "$logs/ls-host.txt" || die "the host lists different objects than the guests"
checked=0
for manifest in aa bb; do
    "${ctl[@]}" get "$(printf '%s%054d' $manifest 0)" -o "$logs/manifest-$manifest.txt"
    while read -r oid size sum; do
        got=$("${ctl[@]}" get "$oid" | sha256sum | cut -d' ' -f1)
        [ "$got" = "$sum" ] || die "host: $oid sha256 $got, expected $sum"
        checked=$((checked + 1))
    done <"$logs/manifest-$manifest.txt"
done
say "the host read all $checked objects intact from the shared file (at +2 MiB)"

if [ "$try_cxl" -eq 1 ]; then
    "$here/try-cxl.sh" --build-dir "$build_dir" --kernel "$KERNEL" --initrd "$INITRD" || true
fi
say "PASS ($((SECONDS - start))s)"
