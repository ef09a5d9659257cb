#!/usr/bin/env bash
# cli_classes.sh - data classes and write activity end to end
# (docs/retention.md, Data classes; Last use): files of a class with a
# keep period leave the snapshots older than it at retention apply (at,
# just before and just after the boundary), newer snapshots still restore
# them with the same content; a free tenant whose backups found changes
# is not purge-due 60 days after its state was set, one whose backups
# found none is.  Needs real mounts (root, /dev/fuse) to put files in
# directories of a store; snapshot times are the real clock, the
# schedules are probed with --now and COFFER_NOW (test_clock builds).
. "$(dirname "$0")/lib.sh"

if [ ! -c /dev/fuse ] || [ "$(id -u)" != 0 ]; then
	echo "1..0 # SKIP needs root and /dev/fuse"
	[ "${CI:-}" = true ] && exit 1
	exit 0
fi

MP="$T/mp"
mkdir -p "$MP"
mnt() {		# mnt TENANT [COFFER_NOW]: mount in the background
	COFFER_NOW=${2:-} "$COFFER" mount "$1" "$MP" -f >/dev/null 2>&1 &
	for _ in $(seq 100); do
		mountpoint -q "$MP" && return 0
		sleep 0.1
	done
	echo "# mount $1 failed"
	return 1
}
umnt() {	# umnt [COFFER_NOW]
	COFFER_NOW=${1:-} "$COFFER" umount "$MP" >/dev/null 2>&1 ||
	    fusermount3 -u -z "$MP"
	for _ in $(seq 100); do
		mountpoint -q "$MP" || { wait; return 0; }
		sleep 0.1
	done
}
backup() { "$COFFER" backup "$1" >/dev/null 2>"$ERR"; }
iso() { date -u -d "@$1" +%Y-%m-%dT%H:%M:%SZ; }
# snaps TENANT: "epoch id" per snapshot, oldest first
snaps() {
	"$COFFER" retention plan "$1" --json 2>/dev/null | python3 -c "
import json,sys,calendar,time
for s in json.load(sys.stdin)['tenants'][0]['snapshots']:
    print(calendar.timegm(time.strptime(s['time'],'%Y-%m-%dT%H:%M:%SZ')), s['id'])"
}
sum() { sha256sum "$1" 2>/dev/null | cut -c1-64; }

cat >> "$COFFER_HOME/coffer.conf" <<CONF
[retention]
classes = billing, logs

[class.billing]
paths = billing/**
keep = 7y
survives_purge = true

[class.logs]
paths = logs/**, cache/**
keep = 30d
CONF

# ---- snapshot retention per class ----
expect 0 "create acme" tenant create acme
mnt acme
mkdir -p "$MP/billing/2026" "$MP/logs" "$MP/cache" "$MP/docs"
echo "invoice 1" > "$MP/billing/2026/inv1.txt"
head -c 200000 /dev/urandom > "$MP/logs/app.log"
echo "cached" > "$MP/cache/c.bin"
echo "readme" > "$MP/docs/readme"
cp "$MP/logs/app.log" "$T/log1"
umnt
check "backup 1" backup acme
sleep 2
mnt acme
head -c 100000 /dev/urandom >> "$MP/logs/app.log"
echo "invoice 2" > "$MP/billing/2026/inv2.txt"
cp "$MP/logs/app.log" "$T/log2"
umnt
check "backup 2" backup acme
snaps acme > "$T/snaps"
check "two snapshots" test "$(wc -l < "$T/snaps")" = 2
t1=$(sed -n 1p "$T/snaps" | cut -d' ' -f1)
t2=$(sed -n 2p "$T/snaps" | cut -d' ' -f1)
s1=$(sed -n 1p "$T/snaps" | cut -d' ' -f2)
d30=$((30 * 86400))

expect 0 "plan just before 30 days" retention plan acme --now "$(iso $((t1 + d30 - 1)))"
check "nothing dropped yet" sh -c "! grep -q 'without' '$OUT'"
expect 0 "plan at 30 days" retention plan acme --now "$(iso $((t1 + d30)))"
check "plan: snapshot 1 without logs" grep -q "^keep .* ${s1:0:12} .*without logs" "$OUT"
check "plan: only snapshot 1" test "$(grep -c without "$OUT")" = 1
check "plan: billing not due" sh -c "! grep -q 'without.*billing' '$OUT'"

expect 0 "apply just before 30 days" retention apply acme --now "$(iso $((t1 + d30 - 1)))"
check "nothing rewritten" sh -c "! grep -q rewrote '$OUT'"
expect 0 "restore snapshot 1 before 30 days" restore acme "$s1" --target "$T/r0"
check "its log restores" test "$(sum "$T/r0/logs/app.log")" = "$(sum "$T/log1")"

COFFER_NOW=$(iso $((t1 + d30))) expect 0 "apply at 30 days (COFFER_NOW)" \
    retention apply acme
check "one snapshot rewritten" out_has "rewrote 1 snapshots"
snaps acme > "$T/snaps"
check "still two snapshots" test "$(wc -l < "$T/snaps")" = 2
n1=$(sed -n 1p "$T/snaps" | cut -d' ' -f2)
check "snapshot 1 has a new id" test "$n1" != "$s1"
check "same time as before" test "$(sed -n 1p "$T/snaps" | cut -d' ' -f1)" = "$t1"
expect 1 "old snapshot id is gone" restore acme "$s1" --target "$T/rx"
expect 0 "restore rewritten snapshot 1" restore acme "$n1" --target "$T/r1"
check "no logs in it" test ! -e "$T/r1/logs" -a ! -e "$T/r1/cache"
check "billing kept in it" test "$(cat "$T/r1/billing/2026/inv1.txt")" = "invoice 1"
check "other files kept" test "$(cat "$T/r1/docs/readme")" = readme
expect 0 "restore snapshot 2 (29 days old)" restore acme latest --target "$T/r2"
check "its log restores, same content" test "$(sum "$T/r2/logs/app.log")" = "$(sum "$T/log2")"
check "its cache restores" test "$(cat "$T/r2/cache/c.bin")" = cached
expect 0 "verify --read-data after the rewrite" verify acme --read-data
check "audited" grep -q '"snapshots_rewritten":1' "$COFFER_HOME/audit/audit.log"
expect 0 "apply again: nothing more" retention apply acme --now "$(iso $((t1 + d30 + 1)))"
check "idempotent" sh -c "! grep -q rewrote '$OUT'"
check "snapshot tagged" sh -c "'$COFFER' snapshots acme --json | grep -q dropped:logs"

expect 0 "apply just after 30 days of snapshot 2" retention apply acme --now "$(iso $((t2 + d30 + 1)))"
check "snapshot 2 rewritten" out_has "rewrote 1 snapshots"
expect 0 "restore latest" restore acme latest --target "$T/r3"
check "no logs left anywhere" test ! -e "$T/r3/logs"
check "billing of snapshot 2 kept" test "$(cat "$T/r3/billing/2026/inv2.txt")" = "invoice 2"
expect 0 "verify after the second rewrite" verify acme --read-data

# ---- purge: billing survives, under a key of its own, for 7 years ----
sum "$T/r3/billing/2026/inv2.txt" > "$T/inv2.sum"
cp -a "$COFFER_HOME/repos/acme" "$T/acme-copy"
# A backup in progress (its shared lock held while it waits on stdin)
# stops the purge before anything is destroyed.
mkfifo "$T/fifo"
"$COFFER" backup acme --stdin --name slow.txt <"$T/fifo" >/dev/null 2>&1 &
bpid=$!
exec 7>"$T/fifo"
sleep 1
expect 1 "purge refused while a backup runs" lifecycle purge acme --yes
check "says locked" err_has "locked"
check "nothing destroyed" sh -c "! grep -q '\"shredded\": *true' \
    '$COFFER_HOME/tenants/acme/tenant.json' && test -d '$COFFER_HOME/repos/acme'"
echo "slow" >&7
exec 7>&-
wait "$bpid"
check "backup finished" test $? = 0
# A billing file written after the last backup: the purge's final backup
# takes it (the refused purge above made one final backup already).
mnt acme
echo "invoice 3" > "$MP/billing/2026/inv3.txt"
umnt
p0=$(date -u +%s)
y7=$((7 * 365 * 86400))
COFFER_NOW=$(iso "$p0") expect 0 "purge acme" lifecycle purge acme --yes
check "says billing retained" out_has "retained class billing"
R=acme.retained-billing
check "acme gone" test ! -e "$COFFER_HOME/tenants/acme" -a \
    ! -e "$COFFER_HOME/repos/acme"
receipt=$(ls "$COFFER_HOME"/receipts/acme-*.json 2>/dev/null | head -1)
check "receipt lists billing retained until purge + 7y" python3 -c "
import json; j=json.load(open('$receipt'))
r=j['retained']; assert len(r)==1, r; r=r[0]
assert r['class']=='billing' and r['retained_as']=='$R', r
# snapshots 1 and 2, the refused purge's final one, the purge's final one
assert r['snapshots']==4 and r['files']==1+2+2+3, r
assert r['bytes']==len('invoice 1\n')*8, r
assert r['delete_after']=='$(iso $((p0 + y7)))', r
assert len(r['key'])==1 and r['key'][0]['kek_id'], r
assert j['repository']['objects_remaining']==0"
expect 0 "receipt verifies" lifecycle verify-receipt "$receipt"
check "purge audited with one retained class" \
    grep -q '"event":"tenant.purge".*"tenant":"acme".*"retained_classes":1' \
    "$COFFER_HOME/audit/audit.log"
run snapshots "$R" --repo "file://$T/acme-copy"
check "a copy of the old repository: the retained key does not open it (exit $RC)" \
    test "$RC" = 3 -o "$RC" = 4
expect 0 "retained tenant lists 4 snapshots" snapshots "$R"
expect 0 "restore retained billing" restore "$R" latest --target "$T/rb"
check "billing content equal" test "$(sum "$T/rb/billing/2026/inv2.txt")" = "$(cat "$T/inv2.sum")"
check "only billing retained" test ! -e "$T/rb/docs" -a ! -e "$T/rb/logs"
check "billing written after the last backup retained too" \
    test "$(cat "$T/rb/billing/2026/inv3.txt")" = "invoice 3"
mkdir -p "$T/rmp"
COFFER_NOW=$(iso "$p0") expect 4 "retained tenant is not mountable" mount "$R" "$T/rmp"
expect 4 "early purge refused" lifecycle purge "$R" --yes
check "says until when" err_has "until $(iso $((p0 + y7)))"
expect 4 "its schedule cannot be changed" lifecycle set "$R" active
run --json lifecycle show "$R" --now "$(iso $((p0 + y7 - 1)))"
check "retained just before 7 years" python3 -c "
import json; assert json.load(open('$OUT'))['effective_state']=='retained'"
run --json lifecycle show "$R" --now "$(iso $((p0 + y7 + 1)))"
check "purge-due just after 7 years" python3 -c "
import json; assert json.load(open('$OUT'))['effective_state']=='purge-due'"
expect 0 "show acme after the purge" lifecycle show acme
check "names the retained class" out_has "retained class billing as tenant $R until $(iso $((p0 + y7)))"
COFFER_NOW=$(iso $((p0 + y7 - 1))) expect 0 "purge acme again before 7 years" \
    lifecycle purge acme --yes
check "says kept until" out_has "kept until $(iso $((p0 + y7)))"
COFFER_NOW=$(iso $((p0 + y7 - 1))) expect 0 "apply just before 7 years" \
    retention apply "$R"
check "still there" test -e "$COFFER_HOME/tenants/$R/tenant.json"
COFFER_NOW=$(iso $((p0 + y7 - 1))) expect 0 \
    "restore just before 7 years" restore "$R" latest --target "$T/rb2"
check "content equal just before 7 years" \
    test "$(sum "$T/rb2/billing/2026/inv2.txt")" = "$(cat "$T/inv2.sum")"
run --json lifecycle show "$R" --now "$(iso $((p0 + y7)))"
check "purge-due at 7 years" python3 -c "
import json; assert json.load(open('$OUT'))['effective_state']=='purge-due'"
COFFER_NOW=$(iso $((p0 + y7))) expect 0 "apply at 7 years purges it" \
    retention apply "$R"
check "retained tenant gone" test ! -e "$COFFER_HOME/tenants/$R" -a \
    ! -e "$COFFER_HOME/repos/$R"
receipt2=$(ls "$COFFER_HOME"/receipts/"$R"-*.json 2>/dev/null | head -1)
check "second receipt" python3 -c "
import json; j=json.load(open('$receipt2'))
assert j['tenant']=='$R' and j['reason']=='schedule: retained', j
assert j['repository']['objects']>0 and len(j['keys_destroyed'])==1, j
assert j['retained']==[], j"
expect 0 "second receipt verifies" lifecycle verify-receipt "$receipt2"
left=$(find "$COFFER_HOME" -name '*acme*' ! -path "$COFFER_HOME/receipts/*" \
    ! -path "$COFFER_HOME/audit/*")
check "nothing of acme left ($left)" test -z "$left"

# A class without paths, or a bad period, is an error, not a silent no-op.
expect 0 "create bad" tenant create bad
python3 - "$COFFER_HOME/tenants/bad/tenant.json" <<'PY'
import json,sys; p=sys.argv[1]; j=json.load(open(p)); j['classes']='nosuch'
json.dump(j,open(p,'w'))
PY
expect 1 "undefined class refused" retention plan bad
check "says missing paths" err_has "class.nosuch"

# ---- write activity as use (free tenants) ----
now=$(date -u +%s)
d0=$((now - 50 * 86400))
for ten in idle busy; do
	expect 0 "create $ten" tenant create "$ten"
	expect 0 "$ten is free since 50 days" lifecycle set "$ten" free --at "$(iso $d0)"
	mnt "$ten" "$(iso $d0)"
	echo "data" > "$MP/file"
	umnt "$(iso $d0)"
	check "$ten: backup" backup "$ten"
	sleep 1
	check "$ten: backup without changes" backup "$ten"
done
sleep 1
mnt busy "$(iso $d0)"
echo "more" >> "$MP/file"
umnt "$(iso $d0)"
check "busy: backup with a change" backup busy
tw=$(snaps busy | tail -1 | cut -d' ' -f1)
for ten in idle busy; do
	expect 0 "$ten: apply records activity" retention apply "$ten"
done
check "idle: no last_write" sh -c "! grep -q last_write '$COFFER_HOME/tenants/idle/tenant.json'"
d60=$((60 * 86400))
while read -r ten probe want; do
	run --json lifecycle show "$ten" --now "$(iso "$probe")"
	got=$(python3 -c "import json;print(json.load(open('$OUT'))['effective_state'])" 2>/dev/null)
	[ "$got" = "$want" ]
	_result $? "$ten at $(iso "$probe"): $want (got $got)"
done <<TABLE
idle $((d0 + d60 - 1)) free
idle $((d0 + d60)) purge-due
busy $((d0 + d60)) free
busy $((tw + d60 - 1)) free
busy $((tw + d60)) purge-due
busy $((tw + d60 + 1)) purge-due
TABLE
expect 0 "show names the last write" lifecycle show busy
check "last write shown" out_has "last write $(iso "$tw")"
COFFER_NOW=$(iso $((d0 + d60))) expect 0 "scheduled purge of idle" \
    retention apply idle
COFFER_NOW=$(iso $((d0 + d60))) expect 0 "no purge of busy" \
    retention apply busy
check "idle purged" test ! -e "$COFFER_HOME/tenants/idle"
check "busy kept" test -e "$COFFER_HOME/tenants/busy/tenant.json"
expect 0 "audit verify" audit verify

done_testing
