#!/bin/sh
# The optional CXL type-3 attempt (tools/qemu/try-cxl.sh --cxl): cxl.sh cxl-a|cxl-b.
# Informational: every step prints "GISMO-CXL <role> <step>: ok|failed" and the script goes on;
# the last line says how far it got. Never used by the test.
set -u
role=$1
export GISMO_REGION=dax:/dev/dax0.0
ID=$(printf 'cc%054d' 1)
last=none

try() {
    label=$1; shift
    echo "GISMO-CXL-RUN $role $label: $*"
    timeout 60 "$@"
    rc=$?
    if [ $rc -eq 0 ]; then
        echo "GISMO-CXL $role $label: ok"
        last=$label
        return 0
    fi
    echo "GISMO-CXL $role $label: failed (exit $rc)"
    return 1
}

# Waits up to 10 s for /dev/dax0.0 (a command, so that `try` can run it under timeout).
wait_dax="i=0; while [ ! -c /dev/dax0.0 ] && [ \$i -lt 100 ]; do sleep 0.1; i=\$((i + 1)); done; [ -c /dev/dax0.0 ]"

for m in $(cat /etc/modules.cxl); do insmod "/lib/modules/cxl/$m" 2>/dev/null; done
sleep 1
try "cxl list" cxl list -M -D -P
case "$role" in
cxl-a)
    try "create-region" cxl create-region -m -d decoder0.0 -w 1 -t pmem mem0 &&
        try "create-namespace" ndctl create-namespace --mode=devdax --map=mem --region=region0 &&
        try "dax0.0" sh -c "$wait_dax" &&
        try "format" gismoctl format --force --coherence flush &&
        try "put" sh -c "echo written-by-cxl-a | gismoctl put $ID -" &&
        try "get" gismoctl get $ID
    ;;
cxl-b)
    # The second guest has no region: QEMU 7.2 does not program the decoders at boot, so it must
    # create one, which gets a new UUID that does not match A's labels.
    try "ndctl list" ndctl list -R -N
    if ! sh -c "$wait_dax"; then
        try "create-region" cxl create-region -m -d decoder0.0 -w 1 -t pmem mem0
        try "enable-region" ndctl enable-region all
        try "dax0.0" sh -c "$wait_dax"
    fi
    try "get A's object" gismoctl get $ID
    ;;
esac
echo "GISMO-CXL-RESULT $role got as far as: $last"
