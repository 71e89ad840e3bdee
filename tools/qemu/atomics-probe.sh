#!/usr/bin/env bash
# Do the atomic instructions of two QEMU guests exclude each other on the memory they share?
# Boots two guests on one NVDIMM file (as run.sh does); both add 1 to one counter N times with a
# compare-and-swap loop (guest/atomic-probe.c) and print what they see. Run once per CPU option:
#
#   tools/qemu/atomics-probe.sh --bin-dir DIR [--build-dir DIR] [--smp OPTS] [--accel OPTS] [-n N]
#
# --smp    QEMU -smp value (default 1,maxcpus=2, what run.sh uses; try 1 to see lost updates)
# --accel  QEMU -accel value (default tcg,thread=multi)
# Exit status 0 when no update was lost.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
bin_dir= build_dir=$here/build smp=1,maxcpus=2 accel=tcg,thread=multi n=2000000
while [ $# -gt 0 ]; do
    case "$1" in
        --bin-dir) bin_dir=$2; shift 2 ;;
        --build-dir) build_dir=$2; shift 2 ;;
        --smp) smp=$2; shift 2 ;;
        --accel) accel=$2; shift 2 ;;
        -n) n=$2; shift 2 ;;
        -h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "atomics-probe.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
[ -n "$bin_dir" ] || { echo "atomics-probe.sh: --bin-dir is required" >&2; exit 2; }
mkdir -p "$build_dir"
build_dir=$(cd "$build_dir" && pwd)
eval "$("$here/build-guest.sh" --bin-dir "$bin_dir" --build-dir "$build_dir")"
logs=$build_dir/logs
mkdir -p "$logs"
shared=$build_dir/probe.img
rm -f "$shared"
truncate -s 256M "$shared"

pids=()
trap 'for p in "${pids[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null; done; true' EXIT
boot() {
    : >"$logs/guest-$1.log"
    qemu-system-x86_64 -accel "$accel" -smp "$smp" \
        -machine pc,nvdimm=on -m 512M,slots=2,maxmem=4G \
        -object "memory-backend-file,id=mem1,share=on,mem-path=$shared,size=256M" \
        -device nvdimm,id=nv1,memdev=mem1 \
        -kernel "$KERNEL" -initrd "$INITRD" \
        -append "console=ttyS0 quiet panic=-1 gismo.role=$1" \
        -display none -serial "file:$logs/guest-$1.log" -monitor none -no-reboot \
        >"$logs/qemu-$1.out" 2>&1 &
    pids+=($!)
}
wait_line() {
    local i
    for i in $(seq 1500); do
        grep -q "$2" "$logs/guest-$1.log" && return 0
        sleep 0.2
    done
    echo "atomics-probe: guest $1: no '$2' in time" >&2
    cat "$logs/guest-$1.log" >&2
    exit 1
}
boot atomics-a
wait_line atomics-a 'GISMO-PROBE ready'
boot atomics-b
wait_line atomics-a 'GISMO-PROBE-EXIT'
wait_line atomics-b 'GISMO-PROBE-EXIT'
echo "atomics-probe (-accel $accel -smp $smp, $n CAS increments per guest):"
grep -h 'GISMO-PROBE counter\|GISMO-PROBE-EXIT' "$logs"/guest-atomics-[ab].log | sed 's/^/  /'
! grep -q 'lost [1-9]' "$logs"/guest-atomics-[ab].log
