# lib.sh - a tiny TAP harness for CLI integration tests.  Each script
# sources it, calls check/expect_* and ends with done_testing.  Every
# script gets a throwaway home with the minimum Argon2id cost (tests
# only) and a 0600 passphrase file; nothing outside $T is touched.
set -u
: "${COFFER:?COFFER must name the coffer binary}"
T=$(mktemp -d "${TMPDIR:-/tmp}/cf_cli.XXXXXX")
trap 'rm -rf "$T"' EXIT
export COFFER_HOME="$T/home"
export COFFER_PASSPHRASE_FILE="$T/pass"
unset COFFER_NOW
mkdir -p "$COFFER_HOME"
printf 'integration passphrase\n' > "$COFFER_PASSPHRASE_FILE"
chmod 600 "$COFFER_PASSPHRASE_FILE"
cat > "$COFFER_HOME/coffer.conf" <<CONF
[kms.local]
type = file
argon2_ops = 1
argon2_mem_kib = 8
CONF

# skip_or_fail WHY: skips the whole script when a real component (a
# server, a package) is missing, but under CI=true, where everything the
# scripts install must be there, it is a failure.
skip_or_fail() {
	if [ "${CI:-}" = true ]; then
		echo "Bail out! $1 (required when CI=true)"
		exit 1
	fi
	echo "1..0 # SKIP $1"
	exit 0
}

_n=0
_failed=0
OUT="$T/out"
ERR="$T/err"

_result() {	# _result OK DESCRIPTION
	_n=$((_n + 1))
	if [ "$1" = 0 ]; then
		echo "ok $_n - $2"
	else
		_failed=$((_failed + 1))
		echo "not ok $_n - $2"
		sed 's/^/# stdout: /' "$OUT" 2>/dev/null | head -20
		sed 's/^/# stderr: /' "$ERR" 2>/dev/null | head -20
	fi
}

# run ARGS...: runs coffer, capturing stdout/stderr; sets RC.
run() {
	"$COFFER" "$@" >"$OUT" 2>"$ERR"
	RC=$?
}

# expect RC DESCRIPTION ARGS...: coffer ARGS must exit with RC.
expect() {
	local want=$1 desc=$2
	shift 2
	run "$@"
	[ "$RC" = "$want" ]
	local ok=$?
	[ $ok = 0 ] || echo "# exit $RC, want $want: coffer $*" >>"$ERR"
	_result $ok "$desc"
}

# check DESCRIPTION COMMAND...: a shell condition.
check() {
	local desc=$1
	shift
	"$@" >/dev/null 2>&1
	_result $? "$desc"
}

flip_byte() {	# flip_byte FILE OFFSET: inverts the byte there, in place
	local b
	b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
	# shellcheck disable=SC2059
	printf "\\$(printf '%03o' $(( b ^ 255 )))" |
		dd of="$1" bs=1 seek="$2" conv=notrunc 2>/dev/null
}
out_has() { grep -q -- "$1" "$OUT"; }
err_has() { grep -q -- "$1" "$ERR"; }

done_testing() {
	echo "1..$_n"
	[ "$_failed" = 0 ]
	exit $?
}
