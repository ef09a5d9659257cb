# cli_audit.sh - the audit trail through the CLI: what is recorded, that
# no secret is, and that tampering gives exit 3 naming the record.
. "$(dirname "$0")/lib.sh"

LOG="$COFFER_HOME/audit/audit.log"
expect 0 "create acme" tenant create acme
expect 0 "create beta" tenant create beta
expect 0 "rotate acme" tenant rotate-kek acme
expect 0 "audit verify on an intact log" audit verify
check "verify counts the records" out_has "intact: "
expect 0 "audit show --tenant acme" audit show --tenant acme
check "acme's creation is recorded" out_has '"event":"tenant.create"'
check "acme's rotation is recorded" out_has '"event":"tenant.rotate_kek"'
check "beta's records are filtered out" bash -c "! grep -q '\"tenant\":\"beta\"' '$OUT'"
check "unwraps say who, which KMS, which version" \
	bash -c "grep '\"event\":\"key.unwrap\"' '$LOG' | grep -q '\"actor\":\".*\"kms\":\"local\".*\"key_version\":1'"
check "no passphrase in the log" bash -c "! grep -q 'integration passphrase' '$LOG'"

# No key material: no 64-hex string in the log except MAC chain fields.
check "no key-sized hex outside prev/mac" bash -c \
	"! sed -E 's/\"(prev|mac)\":\"[0-9a-f]{64}\"//g' '$LOG' | grep -Eq '[0-9a-f]{64}'"

cp "$LOG" "$T/good.log"
sed -i '2s/"tenant":"acme"/"tenant":"acmf"/' "$LOG"
expect 3 "an edited record gives exit 3" audit verify
check "...naming record 2" err_has "record 2"
cp "$T/good.log" "$LOG"
sed -i '3d' "$LOG"
expect 3 "a removed record gives exit 3" audit verify
cp "$T/good.log" "$LOG"
head -n -1 "$T/good.log" > "$LOG"
expect 3 "a removed last record gives exit 3" audit verify
check "...the anchor notices" err_has "anchor"
cp "$T/good.log" "$LOG"
expect 0 "the restored log verifies" audit verify
expect 0 "--json verify" --json audit verify
check "json says ok" out_has '"ok": true'
expect 2 "audit without subcommand" audit
done_testing
