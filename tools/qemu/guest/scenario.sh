#!/bin/sh
# The two-guest scenario, run by /init in each guest: scenario.sh a|b.
#
# The guests share one NVDIMM (one host file) as /dev/dax0.0. The host boots guest A first and
# guest B only once A has printed "GISMO-STEP server-started" (B must find the devdax info block A
# wrote when it loads its modules). The guests synchronise through the store itself: a guest
# waits for the other's objects with `gismoctl get --timeout-ms`.
#
#   A: configures the namespace (devdax, --map=mem), formats the region (flush coherence), starts
#      gismo-server.
#   B: starts its own gismo-server on the same region and puts a "ready" object; it waits for A's
#      manifest (id size sha256 per line) and each object in turn, checking the sha256, while
#   A: puts the manifest and objects of varied sizes (random data, 1 B to 24 MiB).
#   B: then puts its own objects and manifest, which A reads and checks.
#   B: kills a client with kill -9 in the middle of a large put, then puts a marker object.
#   A: waits for the marker, looks for the leader reaping the dead client, puts a final marker,
#      prints `ls` and runs fsck (if gismoctl has it). B waits for the final marker and does the same.
# Every line the host looks for starts with GISMO-. Every wait has a timeout.
set -u
role=$1
R=dax:/dev/dax0.0
export GISMO_REGION=$R
T=/tmp/gismo
mkdir -p $T

step() { echo "GISMO-STEP $* uptime=$(cut -d' ' -f1 /proc/uptime)"; }
fail() { echo "GISMO-FAIL $*"; exit 1; }
note() { echo "GISMO-NOTE $*"; }
# Runs a command with a timeout (seconds); fails the scenario when it fails or times out.
must() {
    secs=$1; shift
    timeout "$secs" "$@" || fail "exit $? (timeout ${secs}s): $*"
}

# id PREFIX N: a 56-hex-digit object id.
id() { printf '%s%054d' "$1" "$2"; }

MANIFEST_A=$(id aa 0)
MANIFEST_B=$(id bb 0)
KILLED=$(id bc 1)
B_READY=$(id be 0)
B_DONE=$(id bd 0)
A_DONE=$(id ad 0)

wait_dax() {
    i=0
    while [ ! -c /dev/dax0.0 ]; do
        i=$((i + 1))
        [ $i -le 300 ] || { ls /dev; ndctl list -N 2>&1; fail "/dev/dax0.0 did not appear within 30 s"; }
        sleep 0.1
    done
    step "dax0.0 present size=$(cat /sys/bus/dax/devices/dax0.0/size 2>/dev/null)"
}

start_server() {
    gismo-server --region $R >$T/server.log 2>&1 &
    server_pid=$!
    i=0
    while ! grep -q 'ready: serving' $T/server.log 2>/dev/null; do
        i=$((i + 1))
        if [ $i -gt 300 ] || ! kill -0 $server_pid 2>/dev/null; then
            cat $T/server.log
            fail "gismo-server did not become ready"
        fi
        sleep 0.1
    done
    step "server-started pid=$server_pid"
}

# put_objects PREFIX SIZES...: writes random files, puts the manifest, then the objects.
put_objects() {
    prefix=$1; shift
    : >$T/manifest.$prefix
    n=0
    for size in "$@"; do
        n=$((n + 1))
        f=$T/obj.$prefix.$n
        must 60 head -c "$size" /dev/urandom >$f
        sum=$(sha256sum $f | cut -d' ' -f1)
        echo "$(id $prefix $n) $size $sum" >>$T/manifest.$prefix
    done
    must 30 gismoctl put $(id $prefix 0) $T/manifest.$prefix
    step "manifest $prefix put ($n objects)"
    n=0
    for size in "$@"; do
        n=$((n + 1))
        must 120 gismoctl put $(id $prefix $n) $T/obj.$prefix.$n
        rm -f $T/obj.$prefix.$n
        step "put $(id $prefix $n) size=$size"
    done
}

# get_objects PREFIX: waits for the other guest's manifest, then gets and checks every object.
get_objects() {
    prefix=$1
    must 300 gismoctl get $(id $prefix 0) -o $T/theirs.$prefix --timeout-ms 240000
    count=0
    while read -r oid size sum; do
        must 300 gismoctl get "$oid" -o $T/got --timeout-ms 240000
        got_size=$(wc -c <$T/got)
        got_sum=$(sha256sum $T/got | cut -d' ' -f1)
        [ "$got_size" = "$size" ] || fail "$oid: size $got_size, expected $size"
        [ "$got_sum" = "$sum" ] || fail "$oid: sha256 $got_sum, expected $sum"
        rm -f $T/got
        count=$((count + 1))
        step "got $oid size=$size sha256 ok"
    done <$T/theirs.$prefix
    step "checked $count objects of $prefix"
}

has_fsck() { gismoctl --help 2>&1 | grep -q '^ *fsck'; }

run_fsck() {
    if has_fsck; then
        gismoctl fsck >$T/fsck.out 2>&1
        rc=$?
        sed 's/^/  fsck: /' $T/fsck.out
        [ $rc -eq 0 ] || fail "gismoctl fsck exit $rc"
        step "fsck clean"
    else
        note "gismoctl has no fsck subcommand; showing stat instead"
    fi
    gismoctl stat | sed 's/^/  stat: /'
}

print_ls() {
    echo "GISMO-LS-BEGIN"
    gismoctl ls
    echo "GISMO-LS-END"
}

# Kills a put of a large regular file while the object is being written (state "creating").
kill_mid_put() {
    must 60 head -c $((64 << 20)) /dev/urandom >$T/big
    gismoctl put $KILLED $T/big &
    put_pid=$!
    i=0
    state=
    while [ $i -lt 400 ]; do
        state=$(gismoctl ls 2>/dev/null | awk -v id=$KILLED '$1 == id {print $4}')
        [ -n "$state" ] && [ "$state" != sealed ] && break
        kill -0 $put_pid 2>/dev/null || break
        i=$((i + 1))
    done
    kill -9 $put_pid 2>/dev/null
    wait $put_pid 2>/dev/null
    state=$(gismoctl ls 2>/dev/null | awk -v id=$KILLED '$1 == id {print $4}')
    rm -f $T/big
    gismoctl clients | sed 's/^/  clients: /'
    case "$state" in
        sealed | "") fail "the put finished (state '$state') before it could be killed" ;;
        *) step "killed put pid=$put_pid mid-put (object state $state, after $i polls of ls)" ;;
    esac
}

reaper_implemented() { ! gismo-server --help 2>&1 | grep -q 'reaper, which is planned'; }

# Waits for the leader to reap the client killed in B.
check_reaped() {
    if ! reaper_implemented; then
        note "gismo-server has no reaper yet (--help: 'the reaper, which is planned'): the killed client stays in the table"
        gismoctl clients | sed 's/^/  clients: /'
        return 0
    fi
    # Reaping the killed client aborts its unsealed object: wait until it is gone. (The reaped
    # counter alone could have risen for another client, one stalled past its lease on a loaded
    # machine.)
    i=0
    while gismoctl ls | grep -q "^$KILLED"; do
        i=$((i + 1))
        if [ $i -gt 60 ]; then
            gismoctl clients
            gismoctl stat
            fail "the killed client's object $KILLED was not aborted within 30 s"
        fi
        sleep 0.5
    done
    gismoctl stat | grep -q 'clients reaped [1-9]' || fail "the object is gone but no client was reaped"
    step "dead client reaped, its object aborted ($(gismoctl stat | grep -o 'aborted [0-9]*, clients reaped [0-9]*'))"
    gismoctl clients | sed 's/^/  clients: /'
}

SIZES_A="1 4095 65543 1048576 5242883 25165824"
SIZES_B="7 131072 3145731 16777216"

case "$role" in
a)
    step "create-namespace"
    must 120 ndctl create-namespace --force --mode=devdax --map=mem --reconfig=namespace0.0 >$T/ns.json
    wait_dax
    must 60 gismoctl format --force --coherence flush
    start_server
    # B boots now; wait for its server so that B's gets run while these puts do.
    must 300 gismoctl get $B_READY -o $T/b_ready --timeout-ms 240000
    step "B ready: $(cat $T/b_ready)"
    put_objects aa $SIZES_A
    get_objects bb
    must 300 gismoctl get $B_DONE -o $T/b_done --timeout-ms 240000
    step "B done: $(cat $T/b_done)"
    check_reaped
    must 30 gismoctl put $A_DONE $T/b_done
    print_ls
    run_fsck
    kill $server_pid
    wait $server_pid
    step "server stopped"
    ;;
b)
    wait_dax
    start_server
    echo "B server pid $server_pid" >$T/b_ready
    must 30 gismoctl put $B_READY $T/b_ready
    get_objects aa
    put_objects bb $SIZES_B
    kill_mid_put
    echo "killed-put $KILLED" >$T/b_done
    must 30 gismoctl put $B_DONE $T/b_done
    must 300 gismoctl get $A_DONE -o $T/a_done --timeout-ms 240000
    print_ls
    run_fsck
    kill $server_pid
    wait $server_pid
    step "server stopped"
    ;;
*)
    fail "unknown role '$role' (kernel command line gismo.role=a|b)"
    ;;
esac
exit 0
