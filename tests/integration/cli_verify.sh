# cli_verify.sh - coffer verify through the CLI (issue 4, Verify): a clean
# repository exits 0; a flipped byte in a pack is found by --read-data
# only and the file is named; a deleted pack is found structurally with
# the snapshot and file named; a tampered snapshot and a truncated index
# exit 3; another tenant's key gives exit 3 with a clear message; --json
# counts; the audit record and the tenant's last_verify.
. "$(dirname "$0")/lib.sh"

if ! "$COFFER" help backup >/dev/null 2>&1; then
	echo "1..0 # SKIP coffer built without the backup command"
	exit 0
fi

REPO="$COFFER_HOME/repos/acme"
expect 0 "create acme" tenant create acme
expect 0 "create beta" tenant create beta
head -c 300000 /dev/urandom > "$T/in.bin"
run backup acme --stdin --name payroll.db < "$T/in.bin"
_result $([ "$RC" = 0 ]; echo $?) "back up a stream"
expect 0 "a clean repository verifies" verify acme
check "...saying ok" out_has "verify: ok"
expect 0 "read-data on a clean repository" verify acme --read-data
expect 0 "--json summary" --json verify acme --read-data
# Every pack read: packs_read equals packs (one or two: the writer's
# threads may put the tree blob in the data blob's pack or in its own).
check "...with counts" bash -c "p=\$(sed -n 's/.*\"packs\": \\([0-9]*\\).*/\\1/p' '$OUT' | head -1); \
	[ -n \"\$p\" ] && [ \"\$p\" -ge 1 ] && grep -q \"\\\"packs_read\\\": \$p\" '$OUT'"
check "...and result ok" out_has '"result": "ok"'
expect 0 "subset 0 reads nothing" --json verify acme --read-data-subset 0
check "...packs_read 0" out_has '"packs_read": 0'
check "...the seed is printed" err_has "seed "
expect 2 "--read-data and a subset together: usage" verify acme \
	--read-data --read-data-subset 10
expect 2 "a subset over 100: usage" verify acme --read-data-subset 101

PACK=$(find "$REPO/data" -type f -size +200k | head -1)
cp "$PACK" "$T/pack.bak"
flip_byte "$PACK" 150000
expect 0 "a flipped byte passes the structural check" verify acme
expect 3 "...and read-data finds it" verify acme --read-data
check "...naming the file" out_has "payroll.db"
check "...and the snapshot" out_has "damaged snapshot"
check "last_verify recorded" grep -q '"last_verify"' \
	"$COFFER_HOME/tenants/acme/tenant.json"
check "last_verify_result damaged" grep -q '"last_verify_result": "damaged"' \
	"$COFFER_HOME/tenants/acme/tenant.json"
check "the audit has backup.verify without file names" bash -c \
	"grep -q '\"event\":\"backup.verify\"' '$COFFER_HOME/audit/audit.log' && ! grep -q payroll '$COFFER_HOME/audit/audit.log'"
rm "$PACK"
expect 3 "a deleted pack is found structurally" verify acme
# The file is named, or, when that one pack also held the snapshot's tree,
# the directory the tree described.
check "...naming the file (or its directory)" bash -c \
	"grep -q -- /payroll.db '$OUT' || grep -q -- '/ (directory unreadable' '$OUT'"
check "...why" out_has "missing"
cp "$T/pack.bak" "$PACK"
expect 0 "restored pack: clean again" verify acme --read-data

SNAP=$(find "$REPO/snapshots" -type f | head -1)
cp "$SNAP" "$T/snap.bak"
flip_byte "$SNAP" 40
expect 3 "a tampered snapshot" verify acme
check "...is named" out_has "damaged snapshot $(basename "$SNAP")"
cp "$T/snap.bak" "$SNAP"

IDX=$(find "$REPO/index" -type f | head -1)
cp "$IDX" "$T/idx.bak"
truncate -s 30 "$IDX"
expect 3 "a truncated index" verify acme
check "...is reported" err_has "index $(basename "$IDX")"
cp "$T/idx.bak" "$IDX"

expect 3 "another tenant's key: exit 3" verify beta --repo "file://$REPO"
check "...with a clear message" err_has "does not open with tenant beta's key"
expect 1 "no repository: exit 1" verify beta
expect 1 "unknown tenant" verify nobody
done_testing
