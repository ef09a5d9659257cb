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

# A full home: every attempt is counted before the passphrase is tried,
# so an attempt that cannot be counted is not made (fails closed), and
# the operator is told why (it said "unknown error").
mkdir -p "$T/small"
if mount -t tmpfs -o size=2m tmpfs "$T/small" 2>/dev/null; then
	trap 'umount -l "$T/small" 2>/dev/null; rm -rf "$T"' EXIT
	cp -a "$COFFER_HOME" "$T/small/home"
	head -c 4M /dev/zero >"$T/small/fill" 2>/dev/null
	COFFER_HOME="$T/small/home" expect 1 "a full home: no unlock attempt (exit 1)" \
	    tenant rotate-kek acme
	check "...says it cannot count the attempt, and why" \
	    err_has "cannot count this unlock attempt in $T/small/home/locks/"
	check "...names the cause" \
	    err_has "No space left on device (every attempt is recorded"
	rm -f "$T/small/fill"
	COFFER_HOME="$T/small/home" expect 0 "...and with room again it works" \
	    tenant rotate-kek acme
	umount -l "$T/small"
else
	_result 0 "a full home # SKIP cannot mount a tmpfs"
fi
done_testing
