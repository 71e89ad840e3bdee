#!/usr/bin/env bash
# The optional CXL type-3 attempt (run.sh --cxl): two guests, one after the other, each with a
# QEMU cxl-type3 device backed by the same host file (and label storage area), try to reach the
# same GISMO region. Informational: prints how far each guest got and always exits 0 once the
# guests ran; see docs/qemu.md for the result on this project's machines.
#
#   tools/qemu/try-cxl.sh --build-dir DIR --kernel VMLINUZ --initrd INITRD
set -euo pipefail

build_dir= kernel= initrd=
while [ $# -gt 0 ]; do
    case "$1" in
        --build-dir) build_dir=$2; shift 2 ;;
        --kernel) kernel=$2; shift 2 ;;
        --initrd) initrd=$2; shift 2 ;;
        *) echo "try-cxl.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
[ -n "$build_dir" ] && [ -n "$kernel" ] && [ -n "$initrd" ] || { echo "try-cxl.sh: --build-dir, --kernel and --initrd are required" >&2; exit 2; }
logs=$build_dir/logs
mkdir -p "$logs"
mem=$build_dir/cxl-mem.img
lsa=$build_dir/cxl-lsa.img
rm -f "$mem" "$lsa"
truncate -s 256M "$mem"
truncate -s 256M "$lsa"

pid=
trap '[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true' EXIT

for role in cxl-a cxl-b; do
    log=$logs/guest-$role.log
    : >"$log"
    # A second, empty root port: with one, writes through the region silently vanish (QEMU 7.2).
    qemu-system-x86_64 -accel tcg -smp 1 -machine q35,cxl=on -m 512M,slots=2,maxmem=4G \
        -object "memory-backend-file,id=cxl-mem1,share=on,mem-path=$mem,size=256M" \
        -object "memory-backend-file,id=cxl-lsa1,share=on,mem-path=$lsa,size=256M" \
        -device pxb-cxl,bus_nr=12,bus=pcie.0,id=cxl.1 \
        -device cxl-rp,port=0,bus=cxl.1,id=root_port13,chassis=0,slot=2 \
        -device cxl-rp,port=1,bus=cxl.1,id=root_port14,chassis=0,slot=3 \
        -device cxl-type3,bus=root_port13,memdev=cxl-mem1,lsa=cxl-lsa1,id=cxl-pmem0 \
        -M cxl-fmw.0.targets.0=cxl.1,cxl-fmw.0.size=4G \
        -kernel "$kernel" -initrd "$initrd" \
        -append "console=ttyS0 quiet panic=-1 gismo.role=$role" \
        -display none -serial "file:$log" -monitor none -no-reboot \
        >"$logs/qemu-$role.out" 2>&1 &
    pid=$!
    for _ in $(seq 900); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    kill -9 "$pid" 2>/dev/null || true
    pid=
    echo "try-cxl: $role:"
    grep -h 'GISMO-CXL' "$log" | grep -v 'CXL-RUN' | sed 's/^/  /' || echo "  (no output; see $log and $logs/qemu-$role.out)"
done
