#!/usr/bin/env bash
# cli_retention.sh - coffer retention plan/apply, lifecycle set/show/hold/
# release/purge/verify-receipt end to end (docs/retention.md): keep-last
# with a legal hold, verify and restore after the prune, the lifecycle
# schedules at, before and after each boundary through --now and
# COFFER_NOW (test_clock builds), the mount refusal by date, and a purge
# that leaves nothing of the tenant in the home or the repository, whose
# receipt the audit chain vouches for, and after which a copy of the
# repository taken before cannot be opened.
. "$(dirname "$0")/lib.sh"

snap() {	# snap TENANT TEXT: one --stdin backup
	printf '%s\n' "$2" | "$COFFER" backup "$1" --stdin --name f.txt \
	    >/dev/null 2>"$ERR"
}
nsnaps() { "$COFFER" snapshots "$1" 2>/dev/null | grep -c '^[0-9a-f]\{8\}'; }

expect 0 "create acme" tenant create acme
for i in 1 2 3 4 5; do snap acme "version $i" || echo "# backup $i failed"; done
check "five snapshots" test "$(nsnaps acme)" = 5

# ---- retention ----
cat >> "$COFFER_HOME/coffer.conf" <<CONF
[retention]
keep_last = 2

[retention.gold]
keep_daily = 7
keep_within = 1y
CONF
expect 0 "plan" retention plan acme
check "plan: 3 remove, 2 keep" test "$(grep -c '^remove' "$OUT")" = 3 -a \
    "$(grep -c '^keep' "$OUT")" = 2
check "plan names the rule" out_has "last"
expect 0 "plan --json" retention plan acme --json
check "json plan" python3 -c "
import json,sys; j=json.load(open('$OUT'))['tenants'][0]
assert j['remove']==3 and j['keep']==2, j
assert all(s['reason']=='last' for s in j['snapshots'] if s['action']=='keep')"
expect 0 "apply --dry-run" retention apply acme --dry-run
check "dry run removed nothing" test "$(nsnaps acme)" = 5

expect 0 "legal hold" lifecycle hold acme --reason "case 42"
expect 0 "apply under hold" retention apply acme
check "hold: nothing removed" test "$(nsnaps acme)" = 5
check "hold shown in plan" out_has "legal hold"
expect 0 "release" lifecycle release acme
check "hold and release audited" grep -q '"event":"lifecycle.release"' \
    "$COFFER_HOME/audit/audit.log"

expect 0 "apply" retention apply acme
check "two snapshots left" test "$(nsnaps acme)" = 2
check "prune deleted packs" out_has "packs deleted"
expect 0 "verify --read-data after prune" verify acme --read-data
expect 0 "restore latest after prune" restore acme latest --target "$T/r1"
check "latest content" grep -q "version 5" "$T/r1/f.txt"
expect 0 "apply again: idempotent" retention apply acme
check "still two" test "$(nsnaps acme)" = 2
check "apply audited" grep -q '"event":"retention.apply"' \
    "$COFFER_HOME/audit/audit.log"
# A backup in progress (its shared lock held while it waits on stdin)
# keeps apply out; once it is done apply runs.
mkfifo "$T/fifo"
"$COFFER" backup acme --stdin --name slow.txt <"$T/fifo" >/dev/null 2>&1 &
bpid=$!
exec 7>"$T/fifo"
sleep 1
expect 1 "apply refused while a backup runs" retention apply acme
check "says locked" err_has "locked"
echo "slow" >&7
exec 7>&-
wait "$bpid"
check "backup finished" test $? = 0
expect 0 "apply after the backup" retention apply acme
check "per-path groups: 2 of f.txt + 1 of slow.txt" test "$(nsnaps acme)" = 3
expect 0 "plan for all tenants" retention plan
expect 2 "bad --now" retention plan acme --now yesterday

# A plan section per tenant.
expect 0 "create gold" tenant create gold
snap gold "g1"
python3 - "$COFFER_HOME/tenants/gold/tenant.json" <<'PY'
import json,sys; p=sys.argv[1]; j=json.load(open(p)); j['plan']='gold'
json.dump(j,open(p,'w'))
PY
expect 0 "plan uses [retention.gold]" retention plan gold
check "gold policy" out_has "retention.gold"

# ---- lifecycle: every schedule at, before, after each boundary ----
expect 0 "create eval" tenant create ev
# state  since  probe  effective
while read -r state probe want; do
	[ -z "$state" ] && continue
	"$COFFER" lifecycle set ev "$state" --at 2026-01-01 >/dev/null 2>&1
	run --json lifecycle show ev --now "$probe"
	got=$(python3 -c "import json;print(json.load(open('$OUT'))['effective_state'])" 2>/dev/null)
	[ "$got" = "$want" ]
	_result $? "$state at $probe: $want (got $got)"
done <<'TABLE'
trial-ended 2026-01-12T23:59:59Z trial-ended
trial-ended 2026-01-13 purge-due
trial-ended 2026-01-14 purge-due
cancelled 2026-03-31T23:59:59Z cancelled
cancelled 2026-04-01 purge-due
cancelled 2026-04-02 purge-due
payment-failed 2026-01-15T23:59:59Z payment-failed
payment-failed 2026-01-16 suspended
payment-failed 2026-01-17 suspended
payment-failed 2026-03-31T23:59:59Z suspended
payment-failed 2026-04-01 closed
payment-failed 2026-04-02 closed
payment-failed 2026-04-07T23:59:59Z closed
payment-failed 2026-04-08 purge-due
closed 2026-01-07T23:59:59Z closed
closed 2026-01-08 purge-due
free 2026-03-01T23:59:59Z free
free 2026-03-02 purge-due
evaluation 2026-03-01T23:59:59Z evaluation
evaluation 2026-03-02 locked
evaluation 2026-03-03 locked
evaluation 2026-03-17T23:59:59Z locked
evaluation 2026-03-18 purge-due
evaluation 2026-03-19 purge-due
active 2036-01-01 active
TABLE
expect 2 "unknown state" lifecycle set ev bogus
expect 0 "evaluation" lifecycle set ev evaluation --at 2026-01-01
expect 0 "show (human)" lifecycle show ev --now 2026-02-01
check "upcoming locked date" out_has "upcoming *2026-03-02T00:00:00Z locked"
check "upcoming purge date" out_has "upcoming *2026-03-18T00:00:00Z purge-due"
check "set audited" grep -q '"event":"lifecycle.set"' \
    "$COFFER_HOME/audit/audit.log"
mkdir -p "$T/mp"
COFFER_NOW=2026-03-02 expect 4 "mount refused when locked (COFFER_NOW)" \
    mount ev "$T/mp"
check "says locked" err_has "is locked"
COFFER_NOW=2026-03-02 expect 0 "COFFER_NOW drives show" lifecycle show ev
check "locked via COFFER_NOW" out_has "effective  locked"

# ---- purge ----
expect 0 "acme evaluation" lifecycle set acme evaluation --at 2026-01-01
cp -a "$COFFER_HOME/repos/acme" "$T/repo-copy"
expect 0 "hold acme" lifecycle hold acme
expect 4 "purge refused under hold" lifecycle purge acme --yes
COFFER_NOW=2026-04-01 expect 0 "apply under hold: no purge" retention apply acme
check "acme still there" test -d "$COFFER_HOME/tenants/acme"
expect 0 "release acme" lifecycle release acme
expect 2 "purge needs --yes" lifecycle purge acme
# Another home mounts a tenant also named acme: this home's acme was
# never mounted (no data/), and its purge must leave that mount alone
# (it used to detach every coffer:acme mount on the host).
OH=$T/otherhome
omounted=""
if [ -c /dev/fuse ] && [ "$(id -u)" = 0 ] && command -v fusermount3 >/dev/null
then
	mkdir -p "$OH" "$T/omp"
	cp "$COFFER_HOME/coffer.conf" "$OH/"
	if COFFER_HOME=$OH "$COFFER" tenant create acme >/dev/null 2>&1 &&
	    COFFER_HOME=$OH "$COFFER" mount acme "$T/omp" 2>"$ERR"; then
		omounted=1
		echo other-home >"$T/omp/keep.txt"
	fi
	check "the other home's acme is mounted" test -n "$omounted"
fi
COFFER_NOW=2026-04-01 expect 0 "scheduled purge by apply" retention apply acme
if [ -n "$omounted" ]; then
	check "the other home's acme mount is left alone" \
	    test "$(cat "$T/omp/keep.txt" 2>/dev/null)" = other-home
	COFFER_HOME=$OH "$COFFER" umount "$T/omp" >/dev/null 2>&1 ||
	    fusermount3 -u -z "$T/omp" 2>/dev/null
fi
check "tenant dir gone" test ! -e "$COFFER_HOME/tenants/acme"
check "repository gone" test ! -e "$COFFER_HOME/repos/acme"
left=$(find "$COFFER_HOME" -name '*acme*' ! -path "$COFFER_HOME/receipts/*" \
    ! -path "$COFFER_HOME/audit/*")
check "no file of acme left in the home ($left)" test -z "$left"
receipt=$(ls "$COFFER_HOME"/receipts/acme-*.json 2>/dev/null | head -1)
check "receipt written" test -n "$receipt"
check "receipt lists counts and keys" python3 -c "
import json; j=json.load(open('$receipt'))
assert j['tenant']=='acme' and j['repository']['objects']>0, j
assert j['repository']['objects_remaining']==0 and j['store']['verified_absent']
assert len(j['keys_destroyed'])>=1 and j['reason'].startswith('schedule')"
expect 0 "audit verify" audit verify
expect 0 "receipt verifies" lifecycle verify-receipt "$receipt"
sed 's/"acme"/"acmf"/' "$receipt" > "$T/forged.json"
expect 3 "edited receipt refused" lifecycle verify-receipt "$T/forged.json"
expect 0 "show a purged tenant" lifecycle show acme
check "shows purged" out_has "purged at"
# The copy taken before the purge: no key opens it any more.
expect 1 "copy: purged tenant is gone" snapshots acme --repo "file://$T/repo-copy"
expect 0 "a new acme (new key)" tenant create acme
run snapshots acme --repo "file://$T/repo-copy"
check "copy unreadable with the new acme's key (exit $RC)" test "$RC" = 3 -o "$RC" = 4
check "copy still holds ciphertext" test -n "$(ls "$T/repo-copy/snapshots")"

# A repository setting that points at another tenant's repository is
# refused before any key is destroyed.
expect 0 "create mallory" tenant create mallory
python3 - "$COFFER_HOME/tenants/mallory/tenant.json" "file://$COFFER_HOME/repos/gold" <<'PY'
import json,sys; p=sys.argv[1]; j=json.load(open(p)); j['repo']=sys.argv[2]
json.dump(j,open(p,'w'))
PY
expect 1 "purge refuses a foreign repository" lifecycle purge mallory --yes
check "says not its repository" err_has "not its repository"
check "mallory's keys kept" test -n "$(ls "$COFFER_HOME/tenants/mallory/keys")"
check "gold's repository kept" test -e "$COFFER_HOME/repos/gold/config"

# Manual purge of gold: refused while mounted, --force detaches it.
if [ -c /dev/fuse ] && [ "$(id -u)" = 0 ] && command -v fusermount3 >/dev/null
then
	mkdir -p "$T/gmp"
	expect 0 "mount gold" mount gold "$T/gmp"
	echo data > "$T/gmp/file" 2>/dev/null
	expect 1 "purge refused while mounted" lifecycle purge gold --yes
	check "says mounted" err_has "is mounted"
	expect 0 "purge --force unmounts" lifecycle purge gold --yes --force
	check "no longer mounted" sh -c "! grep -q ' coffer:gold ' /proc/self/mountinfo"
	fusermount3 -u -z "$T/gmp" 2>/dev/null
else
	echo "# no /dev/fuse or not root: mounted purge not tested"
	expect 0 "purge gold" lifecycle purge gold --yes
fi
check "gold gone" test ! -e "$COFFER_HOME/tenants/gold" -a \
    ! -e "$COFFER_HOME/repos/gold"
# A purge that stops half way (a store file that cannot be removed: a
# bind mount over it) has destroyed the keys and the repository; a rerun
# finishes and its receipt still names the destroyed keys.
if [ "$(id -u)" = 0 ]; then
	expect 0 "create crash" tenant create crash
	snap crash "c1"
	mkdir -p "$COFFER_HOME/tenants/crash/store/data"
	touch "$COFFER_HOME/tenants/crash/store/data/pinned" "$T/src"
	# A store path that is not a coffer store is never deleted.
	mkdir -p "$T/notastore" && touch "$T/notastore/precious"
	python3 - "$COFFER_HOME/tenants/crash/tenant.json" "$T/notastore" <<'PY'
import json,sys; p=sys.argv[1]; j=json.load(open(p)); j['store']=sys.argv[2]
json.dump(j,open(p,'w'))
PY
	expect 1 "purge refuses a store without cf.store" lifecycle purge crash --yes
	check "precious file kept" test -f "$T/notastore/precious"
	python3 - "$COFFER_HOME/tenants/crash/tenant.json" <<'PY'
import json,sys; p=sys.argv[1]; j=json.load(open(p)); del j['store']
json.dump(j,open(p,'w'))
PY
	touch "$COFFER_HOME/tenants/crash/store/cf.store"
	mount --bind "$T/src" "$COFFER_HOME/tenants/crash/store/data/pinned"
	expect 1 "purge stops half way" lifecycle purge crash --yes
	check "says incomplete" err_has "incomplete"
	check "keys already shredded (first attempt)" grep -q '"shredded": *true' \
	    "$COFFER_HOME/tenants/crash/tenant.json"
	check "repository already gone" test ! -e "$COFFER_HOME/repos/crash"
	check "no receipt yet" sh -c "! ls $COFFER_HOME/receipts/crash-* 2>/dev/null"
	umount "$COFFER_HOME/tenants/crash/store/data/pinned"
	expect 0 "rerun finishes" lifecycle purge crash --yes
	check "crash gone" test ! -e "$COFFER_HOME/tenants/crash"
	check "rerun receipt names the keys" python3 -c "
import json,glob; j=json.load(open(glob.glob('$COFFER_HOME/receipts/crash-*.json')[0]))
assert len(j['keys_destroyed'])==1 and j['keys_destroyed'][0]['key_version']==1, j"
else
	echo "# not root: half-way purge not tested"
fi
expect 0 "audit verify after purges" audit verify

done_testing
