#!/bin/sh
# The cross-guest atomics probe (tools/qemu/atomics-probe.sh): atomics.sh atomics-a|atomics-b.
# A configures the namespace and says "GISMO-PROBE ready"; then both guests run atomic-probe on
# /dev/dax0.0 at once and print the shared counter (see guest/atomic-probe.c).
role=$1
N=${2:-2000000}
case "$role" in
atomics-a)
    timeout 120 ndctl create-namespace --force --mode=devdax --map=mem --reconfig=namespace0.0 >/dev/null ||
        { echo "GISMO-PROBE-FAIL create-namespace"; exit 1; }
    me=0
    ;;
*) me=1 ;;
esac
i=0
while [ ! -c /dev/dax0.0 ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
[ -c /dev/dax0.0 ] || { echo "GISMO-PROBE-FAIL no /dev/dax0.0"; exit 1; }
echo "GISMO-PROBE ready"
timeout 300 atomic-probe /dev/dax0.0 $me $N
echo "GISMO-PROBE-EXIT $?"
