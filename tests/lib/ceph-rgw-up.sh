#!/usr/bin/env bash
# ceph-rgw-up.sh DIR
#
# Bring up a throw-away single-node Ceph cluster (1 monitor, 1 OSD,
# optionally 1 manager, 1 RADOS Gateway) whose S3 endpoint listens on the
# loopback only. Everything (config, keyrings, data, logs, sockets, pid
# files) lives under DIR. No systemd, no containers: the daemons from the
# Debian packages (ceph-mon, ceph-osd, radosgw, ceph-common; ceph-mgr
# optional) are started by hand with an explicit ceph.conf.
#
# On success, stdout carries only shell `export` lines, so a caller can do
#     eval "$(ceph-rgw-up.sh DIR)"
# Progress and errors go to stderr; daemon logs go to DIR/log/.
#
# Idempotent-ish: if DIR already holds a cluster made by this script and all
# its daemons are alive, the exports are printed again; if some daemons are
# gone (crash, reboot, ceph-rgw-down.sh --keep) they are restarted on the
# existing data, with the ports and settings chosen at the first run.
# If this script fails, daemons it already started keep running for
# inspection: clean up with ceph-rgw-down.sh DIR.
# Concurrent runs are serialised with flock(1) on a lock file in $TMPDIR (or
# /tmp) so that they do not pick the same free ports. Ports are fixed at the
# first run: a cluster stopped with --keep can lose its ports to another
# process meanwhile, and then fails to restart with a clear error.
#
# Knobs (environment variables, all optional):
#   CEPH_RGW_PORT          S3 port on 127.0.0.1        (default: first free from 17480)
#   CEPH_MON_PORT          monitor msgr2 port           (default: first free from 13300)
#                          (the OSD takes ports from Ceph's default 6800-7300)
#   CEPH_OBJECTSTORE       bluestore | memstore         (default: bluestore)
#   CEPH_OSD_SIZE_GB       size of the sparse bluestore file, or of the
#                          memstore RAM device          (default: 20 / 4)
#   CEPH_OSD_MEMORY_TARGET bytes the OSD aims to use    (default: 1073741824)
#   CEPH_WITH_MGR          1 = also run ceph-mgr (package ceph-mgr; default: 0).
#                          Not needed for S3; gives `ceph -s`/`ceph df` stats.
#   CEPH_RGW_LC_DEBUG_INTERVAL  if set (seconds), one lifecycle "day" lasts
#                          that many seconds (test lifecycle expiry quickly)
#   CEPH_RGW_ACCESS_KEY / CEPH_RGW_SECRET_KEY   fixed S3 credentials
#                          (default: random, generated once per DIR)
#   CEPH_UP_TIMEOUT        seconds to wait for each daemon (default: 120)
#   CEPH_RGW_SSL_CERT / CEPH_RGW_SSL_KEY   PEM certificate and key: radosgw
#                          also serves HTTPS on 127.0.0.1 (S3_TLS_ENDPOINT,
#                          https://localhost:PORT, is exported)
#   CEPH_RGW_SSL_PORT      its port (default: first free from 17943)
#
# Used by coffer's S3 integration test (tests/integration/s3_rgw.sh).

set -euo pipefail

PROG=${0##*/}
log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { printf '%s: ERROR: %s\n' "$PROG" "$*" >&2; exit 1; }

[ $# -eq 1 ] || { echo "usage: $PROG DIR" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || die "run this as root (it is written and tested for root only)"

mkdir -p -- "$1"
D=$(cd -- "$1" && pwd)
CONF=$D/ceph.conf
MARK=$D/.ceph-rgw-up          # marks DIR as ours (the down script checks it)
PIDS=$D/pids                  # our pid files (not the daemons' own ones)
TIMEOUT=${CEPH_UP_TIMEOUT:-120}
T0=$(date +%s.%N)

# ---------------------------------------------------------------- prereqs
for b in ceph-mon ceph-osd radosgw radosgw-admin ceph ceph-authtool monmaptool curl setsid; do
    command -v "$b" >/dev/null 2>&1 ||
        die "'$b' not found; install: apt-get install -y ceph-mon ceph-osd radosgw ceph-common curl"
done

# UNIX socket paths are limited to 107 bytes; admin sockets are nice to have.
if [ ${#D} -gt 70 ]; then
    log "warning: DIR path is long (${#D} chars); daemon admin sockets may fail to bind (harmless)"
fi

# ---------------------------------------------------------------- helpers
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }

port_busy() {   # true if something listens on 127.0.0.1:$1 (or on any address)
    if command -v ss >/dev/null 2>&1; then
        ss -Hltn "sport = :$1" 2>/dev/null | grep -q .
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
    fi
}
free_port() {   # first free port from $1 upwards
    local p=$1
    while port_busy "$p"; do
        p=$((p + 1))
        [ "$p" -lt $(($1 + 500)) ] || die "no free TCP port in $1..$p"
    done
    echo "$p"
}

# Is the process in pid file $1 alive and really our daemon $2 for this DIR?
pid_ok() {
    local f=$PIDS/$1.pid pid
    [ -s "$f" ] || return 1
    pid=$(cat "$f")
    [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$CONF" || return 1
    grep -q '^State:.*[Z]' "/proc/$pid/status" 2>/dev/null && return 1
    return 0
}

# start_daemon NAME cmd args... : detach into own session, record its PID.
start_daemon() {
    local name=$1; shift
    if pid_ok "$name"; then
        log "$name already running (pid $(cat "$PIDS/$name.pid"))"
        return 0
    fi
    # -f: stay in the foreground (we background it), so $! is the daemon.
    setsid "$@" -f </dev/null >>"$D/log/$name.stdout" 2>&1 9>&- &
    echo $! >"$PIDS/$name.pid"
    sleep 0.3
    pid_ok "$name" || { tail -n 30 "$D/log/$name.stdout" "$D/log/$name.log" >&2 2>/dev/null || true
                        die "$name exited right after start (see $D/log/)"; }
    log "started $name (pid $(cat "$PIDS/$name.pid"))"
}

# wait_for WHAT DAEMON CMD... : retry CMD until it succeeds, DAEMON dies or timeout.
wait_for() {
    local what=$1 daemon=$2; shift 2
    local end=$(( $(date +%s) + TIMEOUT ))
    until "$@" >/dev/null 2>&1; do
        if ! pid_ok "$daemon"; then
            tail -n 15 "$D/log/$daemon.stdout" >&2 2>/dev/null || true
            die "$daemon died while waiting for $what (logs in $D/log/; rerun $PROG to restart it)"
        fi
        if [ "$(date +%s)" -ge "$end" ]; then
            tail -n 15 "$D/log/$daemon.log" >&2 2>/dev/null || true
            die "timed out after ${TIMEOUT}s waiting for $what (logs in $D/log/)"
        fi
        sleep 0.5
    done
    log "$what ready after $(elapsed)s"
}

C() { timeout 30 ceph -c "$CONF" --connect-timeout 10 "$@"; }

mon_ready() { C mon stat; }
osd_ready() {
    local j; j=$(C osd stat -f json) || return 1
    grep -q '"num_up_osds":1,' <<<"$j" && grep -q '"num_in_osds":1,' <<<"$j"
}
rgw_ready() {
    # the port must be held by *our* radosgw (another cluster's could answer too)
    if command -v ss >/dev/null 2>&1; then
        ss -Hltnp "sport = :$RGW_PORT" 2>/dev/null | grep -q "pid=$(cat "$PIDS/rgw.pid")," || return 1
    fi
    [ "$(curl -s -o /dev/null -m 5 -w '%{http_code}' "http://127.0.0.1:$RGW_PORT/")" = 200 ]
}

print_env() { cat "$D/s3.env"; }

randstr() {     # randstr CHARSET LEN (no `tr </dev/urandom | head`: SIGPIPE + pipefail)
    local s=""
    while [ ${#s} -lt "$2" ]; do
        s+=$(head -c 512 /dev/urandom | LC_ALL=C tr -dc "$1")
    done
    printf '%s\n' "${s:0:$2}"
}

# ------------------------------------------- already up? then just report
if [ -f "$MARK" ] && [ -f "$D/s3.env" ] && pid_ok mon && pid_ok osd && pid_ok rgw; then
    . "$D/settings"
    if { [ "$WITH_MGR" = 0 ] || pid_ok mgr; } && rgw_ready; then
        log "cluster in $D already running"
        print_env
        exit 0
    fi
fi

# ---------------------------------------------- serialise port picking
# Concurrent runs would otherwise pick the same "free" ports. The lock is
# held until our radosgw has bound its port; daemons must not inherit it.
LOCK=${TMPDIR:-/tmp}/ceph-rgw-up.lock
if command -v flock >/dev/null 2>&1; then
    exec 9>>"$LOCK"
    flock -w "$TIMEOUT" 9 || die "another ceph-rgw-up.sh held $LOCK for ${TIMEOUT}s"
fi

# ------------------------------------------------ claim DIR (must be empty)
if [ ! -f "$MARK" ]; then
    [ -z "$(ls -A "$D")" ] ||
        die "$D is not empty and was not made by $PROG; refusing to touch it"
    touch "$MARK"
fi

# -------------------------------------------- first run: config + keyrings
# DIR/.mon-created is written last; without it, a previous first run died
# half-way (no daemon was started yet), so start over from an empty DIR.
if [ ! -f "$D/.mon-created" ]; then
    for n in mon mgr osd rgw; do
        pid_ok "$n" && die "$D is half-initialised but its $n is running; run ceph-rgw-down.sh $D first"
    done
    find "$D" -mindepth 1 -maxdepth 1 ! -name .ceph-rgw-up -exec rm -rf {} +
    mkdir -p "$D/log" "$D/run" "$PIDS" "$D/crash"

    MON_PORT=${CEPH_MON_PORT:-$(free_port 13300)}
    RGW_PORT=${CEPH_RGW_PORT:-$(free_port 17480)}
    STORE=${CEPH_OBJECTSTORE:-bluestore}
    case $STORE in
        bluestore) SIZE_GB=${CEPH_OSD_SIZE_GB:-20} ;;
        memstore)  SIZE_GB=${CEPH_OSD_SIZE_GB:-4} ;;
        *) die "CEPH_OBJECTSTORE must be bluestore or memstore, not '$STORE'" ;;
    esac
    MEMTARGET=${CEPH_OSD_MEMORY_TARGET:-1073741824}
    FSID=$(cat /proc/sys/kernel/random/uuid)
    WITH_MGR=${CEPH_WITH_MGR:-0}
    SSL_PORT=""
    ssl=""
    if [ -n "${CEPH_RGW_SSL_CERT:-}" ]; then
        [ -r "$CEPH_RGW_SSL_CERT" ] && [ -r "${CEPH_RGW_SSL_KEY:-}" ] ||
            die "CEPH_RGW_SSL_CERT and CEPH_RGW_SSL_KEY must name readable PEM files"
        SSL_PORT=${CEPH_RGW_SSL_PORT:-$(free_port 17943)}
        ssl=" ssl_endpoint=127.0.0.1:$SSL_PORT ssl_certificate=$CEPH_RGW_SSL_CERT ssl_private_key=$CEPH_RGW_SSL_KEY"
    fi
    if [ "$WITH_MGR" = 1 ] && ! command -v ceph-mgr >/dev/null 2>&1; then
        die "CEPH_WITH_MGR=1 but ceph-mgr is not installed (apt-get install -y ceph-mgr)"
    fi
    cat >"$D/settings" <<EOF
MON_PORT=$MON_PORT
RGW_PORT=$RGW_PORT
WITH_MGR=$WITH_MGR
SSL_PORT=$SSL_PORT
EOF

    lc=""
    [ -n "${CEPH_RGW_LC_DEBUG_INTERVAL:-}" ] && lc="rgw lc debug interval = $CEPH_RGW_LC_DEBUG_INTERVAL"
    if [ "$STORE" = memstore ]; then
        storeconf="memstore device bytes = $((SIZE_GB * 1024 * 1024 * 1024))"
    else
        storeconf="bluestore block size = $((SIZE_GB * 1024 * 1024 * 1024))
bluestore block create = true
bluestore fsck on mkfs = false"
    fi

    cat >"$CONF" <<EOF
# Generated by $PROG. Single-node test cluster: no redundancy, loopback only.
[global]
fsid = $FSID
mon host = [v2:127.0.0.1:$MON_PORT]
mon initial members = a
ms bind msgr1 = false
public network = 127.0.0.0/8
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $D/keyring
run dir = $D/run
crash dir = $D/crash
log file = $D/log/\$name.log
admin socket = $D/run/\$name.asok
pid file = $D/run/\$name.pid
log to stderr = false
err to stderr = true
# one OSD: pools of size 1, small PG counts, no PG autoscaling
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon max pg per osd = 1000
mon warn on pool no redundancy = false
mon allow pool delete = true
auth allow insecure global id reclaim = false
# other tenants may fill the host disk; don't let the mon shut itself down
mon data avail warn = 2
mon data avail crit = 1

[mon]
mon data = $D/mon.a
# commit map changes every 0.1s instead of 1s: each pool creation by radosgw
# is a few map changes, so this cuts startup from ~17s to a few seconds
paxos propose interval = 0.1
mon cluster log file = $D/log/cluster.log

[mgr]
mgr data = $D/mgr.x

[osd]
osd data = $D/osd.0
keyring = $D/osd.0/keyring
osd objectstore = $STORE
osd memory target = $MEMTARGET
$storeconf

[client]
log file = $D/log/client.log
admin socket = $D/run/\$name.\$pid.asok

[client.rgw.0]
keyring = $D/keyring
log file = $D/log/rgw.log
rgw data = $D/rgw
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT$ssl
rgw thread pool size = 64
# allow SSE-C on the plain-http loopback endpoint (production would use TLS)
rgw crypt require ssl = false
# reclaim space of deleted objects after a minute instead of hours
rgw gc obj min wait = 60
rgw gc processor period = 60
$lc
EOF

    # keyring: mon. + client.admin + client.rgw.0 (+ mgr.x); mon --mkfs imports them all
    ceph-authtool --create-keyring "$D/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
    ceph-authtool "$D/keyring" --gen-key -n client.admin \
        --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
    ceph-authtool "$D/keyring" --gen-key -n client.rgw.0 \
        --cap mon 'allow rw' --cap osd 'allow rwx' --cap mgr 'allow rw' >/dev/null
    ceph-authtool "$D/keyring" --gen-key -n mgr.x \
        --cap mon 'allow profile mgr' --cap osd 'allow *' --cap mds 'allow *' >/dev/null

    monmaptool --create --fsid "$FSID" --addv a "[v2:127.0.0.1:$MON_PORT]" "$D/monmap" >/dev/null
    mkdir -p "$D/mon.a"
    ceph-mon -c "$CONF" --mkfs -i a --monmap "$D/monmap" --keyring "$D/keyring" \
        >>"$D/log/mon.stdout" 2>&1 || die "ceph-mon --mkfs failed (see $D/log/mon.stdout)"
    touch "$D/.mon-created"
    log "monitor store created"
fi
mkdir -p "$D/log" "$D/run" "$PIDS" "$D/crash"

. "$D/settings"      # ports and choices fixed at the first run

# ------------------------------------------------------------------ monitor
if ! pid_ok mon; then
    port_busy "$MON_PORT" && die "monitor port $MON_PORT is taken by another process"
    start_daemon mon ceph-mon -c "$CONF" -i a
fi
wait_for "monitor" mon mon_ready

# --------------------------------------------------------- manager (optional)
if [ "$WITH_MGR" = 1 ]; then
    mkdir -p "$D/mgr.x"      # its key (mgr.x) is in DIR/keyring already
    start_daemon mgr ceph-mgr -c "$CONF" -i x
fi

# ---------------------------------------------------------------------- OSD
if [ ! -f "$D/osd.0/ready" ]; then
    # a previous run may have registered osd.0 and then failed: forget it
    if [ -d "$D/osd.0" ]; then
        C osd purge 0 --yes-i-really-mean-it >/dev/null 2>&1 || true
    fi
    rm -rf "$D/osd.0"; mkdir -p "$D/osd.0"
    uuid=$(cat /proc/sys/kernel/random/uuid)
    secret=$(ceph-authtool --gen-print-key)
    ceph-authtool --create-keyring "$D/osd.0/keyring" -n osd.0 --add-key "$secret" >/dev/null
    printf '{"cephx_secret": "%s"}\n' "$secret" >"$D/osd.0/new.json"
    id=$(C osd new "$uuid" -i "$D/osd.0/new.json" 2>>"$D/log/client.stderr") ||
        die "'ceph osd new' failed (see $D/log/client.stderr)"
    [ "$id" = 0 ] || die "'ceph osd new' returned id '$id', expected 0"
    ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$uuid" >>"$D/log/osd.stdout" 2>&1 ||
        die "ceph-osd --mkfs failed (see $D/log/osd.stdout and $D/log/osd.0.log)"
    touch "$D/osd.0/ready"
    log "OSD created ($(grep -o 'objectstore = .*' "$CONF" | head -1))"
fi
if ! pid_ok osd; then
    start_daemon osd ceph-osd -c "$CONF" -i 0
fi
wait_for "OSD" osd osd_ready

# ---------------------------------------------------------------- radosgw
if ! pid_ok rgw; then
    port_busy "$RGW_PORT" && die "S3 port $RGW_PORT is taken by another process"
    mkdir -p "$D/rgw"
    start_daemon rgw radosgw -c "$CONF" -n client.rgw.0
fi
wait_for "radosgw on 127.0.0.1:$RGW_PORT" rgw rgw_ready
exec 9>&-       # release the port-picking lock

# ------------------------------------------------------------------ S3 user
if [ ! -f "$D/s3.env" ]; then
    AK=${CEPH_RGW_ACCESS_KEY:-$(randstr 'A-Z0-9' 20)}
    SK=${CEPH_RGW_SECRET_KEY:-$(randstr 'A-Za-z0-9' 40)}
    if ! timeout 60 radosgw-admin -c "$CONF" user info --uid=tester >/dev/null 2>&1; then
        timeout 60 radosgw-admin -c "$CONF" user create --uid=tester --display-name="S3 tester" \
            --access-key="$AK" --secret-key="$SK" >"$D/user.json" 2>>"$D/log/client.stderr" ||
            die "radosgw-admin user create failed (see $D/log/client.stderr)"
    else
        timeout 60 radosgw-admin -c "$CONF" user info --uid=tester >"$D/user.json"
        AK=$(grep -o '"access_key": "[^"]*"' "$D/user.json" | head -1 | cut -d'"' -f4)
        SK=$(grep -o '"secret_key": "[^"]*"' "$D/user.json" | head -1 | cut -d'"' -f4)
    fi
    cat >"$D/s3.env.tmp" <<EOF
export S3_ENDPOINT=http://127.0.0.1:$RGW_PORT
export AWS_ENDPOINT_URL=http://127.0.0.1:$RGW_PORT
export AWS_ACCESS_KEY_ID=$AK
export AWS_SECRET_ACCESS_KEY=$SK
export AWS_DEFAULT_REGION=us-east-1
export CEPH_CONF=$CONF
EOF
    if [ -n "${SSL_PORT:-}" ]; then
        echo "export S3_TLS_ENDPOINT=https://localhost:$SSL_PORT" >>"$D/s3.env.tmp"
    fi
    mv "$D/s3.env.tmp" "$D/s3.env"
fi

log "S3 endpoint ready after $(elapsed)s: http://127.0.0.1:$RGW_PORT"
print_env
