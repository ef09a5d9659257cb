# cli_lockout.sh - three wrong passphrases lock the file KMS for 30 minutes
# across processes (exit 4 even with the right passphrase), then it opens.
. "$(dirname "$0")/lib.sh"

export COFFER_NOW=2026-05-01T08:00:00Z
expect 0 "create acme" tenant create acme
printf 'wrong\n' > "$COFFER_PASSPHRASE_FILE"
expect 4 "wrong passphrase 1" tenant rotate-kek acme
check "...1 of 3" err_has "1 of 3"
expect 4 "wrong passphrase 2" tenant rotate-kek acme
expect 4 "wrong passphrase 3 locks" tenant rotate-kek acme
check "...until 08:30" err_has "locked until 2026-05-01T08:30:00Z"
printf 'integration passphrase\n' > "$COFFER_PASSPHRASE_FILE"
export COFFER_NOW=2026-05-01T08:20:00Z
expect 4 "the right passphrase is refused during the lock" tenant rotate-kek acme
check "...with a clear message" err_has "is locked after 3 failed unlocks"
check "...and the minutes left" err_has "10 minutes left"
export COFFER_NOW=2026-05-01T08:30:01Z
expect 0 "after 30 minutes the right passphrase works" tenant rotate-kek acme
expect 0 "the audit log records it all" audit show
check "lockout recorded" out_has '"event":"lockout.locked"'
check "refusal recorded" out_has '"event":"lockout.refused"'
expect 0 "and verifies" audit verify
done_testing
