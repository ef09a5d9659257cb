# s3_s3rver.sh - the S3 backend against s3rver (npm), the quick second S3
# target beside Ceph RGW (s3_rgw.sh).  Two s3rver processes on free
# loopback ports under $T, one over HTTP and one over HTTPS with a
# certificate made here, stopped by PID on exit.
#
# s3rver accepts any secret (it checks only the access key id), ignores
# Object Lock and versioning and cannot list or abort multipart uploads
# (docs/s3.md, "Servers"), so nothing here tests a signature, a checksum
# or a lock: s3_rgw.sh does, against a server that checks them.  What
# this proves is the plain object path on a second implementation:
#   - the C cases of s3_store that fit it (round trips, ListObjectsV2
#     past 1000 keys, an unknown access key refused, a repository with a
#     flipped byte found by verify, TLS refused without the CA, a 16 MiB
#     multipart upload, DeleteObjects batches);
#   - the CLI end to end: tenant create with an s3:// repository, two
#     backups, snapshots, verify --read-data, awscli listing what coffer
#     wrote, retention apply with prune (quiet about the uploads listing
#     s3rver lacks; -v says it), restore byte for byte, a flipped byte
#     in a stored pack (exit 3, the file named), an unknown access key
#     (exit 4, said as refused credentials), and backup + restore over
#     HTTPS, refused without the CA (exit 4, said as such).
# s3rver's ?versioning answer is the bucket's listing: deletes must not
# take it for a versioned bucket (they failed with "File too large").
#
# Installs s3rver from tests/s3rver/package-lock.json (npm) if missing;
# skips without node/npm unless CI=true, where it fails.
. "$(dirname "$0")/lib.sh"

SRC=${CF_SRCDIR:?CF_SRCDIR unset}
S3_STORE=${S3_STORE:?S3_STORE unset}
AWS=/usr/bin/aws	# not a pyenv shim earlier in PATH

# shellcheck source=tools/deps.sh
. "$SRC/tools/deps.sh"
S3RVER_JS=$(cf_deps_s3rver 2>"$T/npm.log") ||
	skip_or_fail "s3rver (npm) cannot be installed: $(tail -n1 "$T/npm.log")"
if [ ! -x "$AWS" ] || ! command -v openssl >/dev/null; then
	cf_deps_install awscli openssl >&2 || skip_or_fail "awscli/openssl missing"
fi

pids=()
cleanup() {
	local p
	for p in "${pids[@]}"; do
		kill "$p" 2>/dev/null
		wait "$p" 2>/dev/null
	done
	rm -rf "$T"
}
trap cleanup EXIT

# A CA and a server certificate for 127.0.0.1.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=coffer-test-ca \
    -keyout "$T/ca.key" -out "$T/ca.pem" >/dev/null 2>&1 &&
openssl req -newkey rsa:2048 -nodes -subj /CN=localhost \
    -keyout "$T/srv.key" -out "$T/srv.csr" >/dev/null 2>&1 &&
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$T/ext" &&
openssl x509 -req -in "$T/srv.csr" -CA "$T/ca.pem" -CAkey "$T/ca.key" \
    -CAcreateserial -days 2 -extfile "$T/ext" -out "$T/srv.pem" >/dev/null 2>&1
check "a test CA and server certificate" test -s "$T/srv.pem"

BUCKET=coffer-test
# start NAME [s3rver options]: s3rver on a free port (-p 0; it prints the
# port it got), data under $T/NAME; sets PORT.  The legacy provider:
# s3rver encrypts ListObjectsV2 continuation tokens with DES, which
# OpenSSL 3 has only there (a truncated listing is a 500 without it).
start() {
	local name=$1 i
	shift
	mkdir -p "$T/$name"
	NODE_OPTIONS=--openssl-legacy-provider node "$S3RVER_JS" \
	    -d "$T/$name" -a 127.0.0.1 -p 0 --silent \
	    --configure-bucket "$BUCKET" "$@" >"$T/$name.log" 2>&1 &
	pids+=($!)
	PORT=""
	for i in $(seq 100); do
		PORT=$(sed -n 's/^S3rver listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' \
		    "$T/$name.log")
		[ -n "$PORT" ] && return 0
		sleep 0.1
	done
	sed 's/^/# /' "$T/$name.log"
	return 1
}
start plain && HTTP=http://127.0.0.1:$PORT
check "s3rver over HTTP on a free loopback port" test -n "${HTTP:-}"
start tls --key "$T/srv.key" --cert "$T/srv.pem" && HTTPS=https://127.0.0.1:$PORT
check "s3rver over HTTPS on a free loopback port" test -n "${HTTPS:-}"
[ -n "${HTTP:-}" ] && [ -n "${HTTPS:-}" ] || done_testing

# s3rver's one account; the environment's CA bundle (a host proxy's on
# some machines) must not replace the test CA for awscli.
export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER
export AWS_DEFAULT_REGION=us-east-1
unset AWS_CA_BUNDLE AWS_SESSION_TOKEN

# The C cases that fit s3rver, their TAP lines renumbered into this plan.
S3_BUCKET=$BUCKET AWS_ENDPOINT_URL=$HTTP S3_ANY_SECRET=1 \
    S3_TLS_ENDPOINT=$HTTPS S3_TLS_CA=$T/ca.pem \
    "$S3_STORE" round_trip list_pages refused repository tls multipart \
    del_batches >"$T/store.tap" 2>&1
rc=$?
while IFS= read -r line; do
	case $line in
	"ok "*) _result 0 "s3_store: ${line#ok * - }" ;;
	"not ok "*) _result 1 "s3_store: ${line#not ok * - }" ;;
	1..* | "TAP version"*) ;;
	*) echo "# $line" ;;
	esac
done <"$T/store.tap"
check "s3_store exit status 0 (got $rc)" test "$rc" -eq 0

# ---- the CLI ----------------------------------------------------------------
cat >>"$COFFER_HOME/coffer.conf" <<CONF

[retention]
keep_last = 1
CONF
URL="s3://$BUCKET/cli?endpoint=$HTTP"
PACKDIR=$T/plain/$BUCKET/cli/data
packs() { find "$PACKDIR" -name '*._S3rver_object' 2>/dev/null | wc -l; }

mkdir -p "$T/src/sub"
head -c $((3 << 20)) /dev/urandom >"$T/src/one"
printf 'small file\n' >"$T/src/sub/small"
ln -s sub/small "$T/src/link"
expect 0 "tenant create with an s3:// repository on s3rver" tenant create acme --repo "$URL"
expect 0 "tenant show names the repository" tenant show acme
check "...the URL itself" out_has "repo *s3://$BUCKET/cli?endpoint=$HTTP"
COFFER_NOW=2026-01-01T00:00:00Z expect 0 "first backup" backup acme --dir "$T/src"
rm "$T/src/one"
head -c $((2 << 20)) /dev/urandom >"$T/src/two"
COFFER_NOW=2026-01-02T00:00:00Z expect 0 "second backup (one file gone, one new)" backup acme --dir "$T/src"
expect 0 "snapshots" snapshots acme
check "...lists both" test "$(grep -c '2026-01-0[12]T' "$OUT")" -eq 2
expect 0 "verify --read-data" verify acme --read-data
"$AWS" --endpoint-url "$HTTP" s3 ls --recursive "s3://$BUCKET/cli/" >"$OUT" 2>"$ERR"
check "aws s3 ls lists the config coffer wrote" out_has ' cli/config$'
check "...its packs" grep -Eq ' cli/data/[0-9a-f]{2}/[0-9a-f]{64}$' "$OUT"
check "...its index and snapshots" bash -c "grep -Eq ' cli/index/[0-9a-f]{64}\$' '$OUT' && grep -Eq ' cli/snapshots/[0-9a-f]{64}\$' '$OUT'"

before=$(packs)
expect 0 "retention apply (keep_last = 1) forgets the first snapshot and prunes" \
    retention apply acme --now 2026-01-03
check "...its pack is deleted ($before -> $(packs))" test "$(packs)" -lt "$before"
check "...and nothing is said about the uploads listing s3rver lacks" \
    test ! -s "$ERR"
expect 0 "snapshots after the prune" snapshots acme
check "...one left" test "$(grep -c '2026-01-0[12]T' "$OUT")" -eq 1
COFFER_NOW=2026-01-03T00:00:00Z expect 0 "a third backup" backup acme --dir "$T/src"
expect 0 "retention apply -v" -v retention apply acme --now 2026-01-04
check "...says once why interrupted uploads are not removed" \
    err_has "cannot list interrupted uploads (NotImplemented)"
expect 0 "restore latest" restore acme latest --target "$T/dst"
check "...byte for byte, symlink included" diff -r --no-dereference "$T/src" "$T/dst"

# Refused credentials are said as such (a 403 was once reported as "belongs
# to another tenant"): s3rver checks the access key id.
for cmd in "backup acme --dir $T/src" "snapshots acme" "verify acme" \
    "restore acme latest --target $T/nodst"; do
	# shellcheck disable=SC2086 # words on purpose
	AWS_ACCESS_KEY_ID=COFFERNOSUCHKEY expect 4 "an unknown access key: $cmd exits 4" $cmd
	check "...saying the credentials are refused" err_has "the credentials are refused"
done

# A flipped byte in the stored pack of "two" (the larger one).
big=$(find "$PACKDIR" -name '*._S3rver_object' -size +1M | head -n1)
if [ -n "$big" ]; then
	flip_byte "$big" $(( $(stat -c %s "$big") / 2 ))
fi
check "a pack of more than 1 MiB to damage" test -n "$big"
expect 3 "verify --read-data finds the flipped byte" verify acme --read-data
check "...and names the damaged file" out_has "damaged file .* /two"
expect 0 "restore --path of an undamaged file still works" \
    restore acme latest --target "$T/dst2" --path /sub/small
check "...its bytes" cmp "$T/src/sub/small" "$T/dst2/sub/small"

# HTTPS: refused without the CA, backup and restore with it.
TURL="s3://$BUCKET/tls?endpoint=$HTTPS"
expect 4 "backup over HTTPS without the CA is refused (exit 4)" \
    backup acme --dir "$T/src" --repo "$TURL"
check "...saying the certificate does not verify" \
    err_has "TLS certificate does not verify"
expect 0 "backup over HTTPS with ca=" backup acme --dir "$T/src" --repo "$TURL&ca=$T/ca.pem"
expect 0 "restore over HTTPS with ca=" restore acme latest --target "$T/dst3" \
    --repo "$TURL&ca=$T/ca.pem"
check "...byte for byte" diff -r --no-dereference "$T/src" "$T/dst3"

done_testing
