# kms_kmip.sh - the kmip KMS provider against a real PyKMIP server
# (Debian python3-pykmip) over mutual TLS on a random loopback port.
#
# The script makes its own CA, server and client certificates, starts
# pykmip-server with a per-test database, creates and activates an AES-256
# key with PyKMIP's Python client, and then drives coffer: tenant create,
# unlock through a real FUSE mount (write, remount, read back; skipped
# without /dev/fuse), a tampered wrapped key (exit 3), rotate-kek (a new
# key on the server, unlock still works; rotate-key and reencrypt on the
# mounted tenant), a client certificate from
# another CA (exit 4, clear error) and a stopped server (exit 1, naming
# provider and host:port).  The server is stopped by its PID on exit.
# Skips when the packages are missing, except in CI (CI=true) where that
# is a failure.
. "$(dirname "$0")/lib.sh"

PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
SRV_PID=
MP="$T/mnt"
MNT_PID=

cleanup() {
	if [ -n "$MNT_PID" ]; then
		fusermount3 -u -z "$MP" 2>/dev/null
		kill "$MNT_PID" 2>/dev/null
	fi
	[ -z "${SILENT_PID:-}" ] || kill "$SILENT_PID" 2>/dev/null
	stop_server
	rm -rf "$T"
}
trap cleanup EXIT

stop_server() {
	local i
	[ -n "$SRV_PID" ] || return 0
	# pykmip-server forks helpers (a multiprocessing manager and a policy
	# monitor); it runs in its own process group, which is stopped whole.
	kill -TERM -- "-$SRV_PID" 2>/dev/null
	for i in $(seq 1 100); do
		kill -0 -- "-$SRV_PID" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL -- "-$SRV_PID" 2>/dev/null
	wait "$SRV_PID" 2>/dev/null
	SRV_PID=
}

if ! "$PY" -c 'import kmip' 2>/dev/null || ! command -v pykmip-server \
    >/dev/null 2>&1; then
	if [ -n "${CF_SRCDIR:-}" ] && [ -f "$CF_SRCDIR/tools/deps.sh" ]; then
		# shellcheck source=/dev/null
		. "$CF_SRCDIR/tools/deps.sh"
		cf_deps_install python3-pykmip >/dev/null 2>&1
	fi
fi
"$PY" -c 'import kmip' 2>/dev/null && command -v pykmip-server >/dev/null 2>&1 ||
	skip_or_fail "python3-pykmip is not installed"
command -v openssl >/dev/null 2>&1 || skip_or_fail "openssl is missing"

# ---- PKI: a CA, the server (IP SAN 127.0.0.1), our client; another CA.
P="$T/pki"
mkdir -p "$P"
(
	cd "$P" || exit 1
	set -e
	openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt \
	    -days 2 -subj "/CN=coffer-test-kmip-ca"
	openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr \
	    -subj "/CN=127.0.0.1"
	printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >server.ext
	openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key \
	    -CAcreateserial -out server.crt -days 2 -extfile server.ext
	openssl req -newkey rsa:2048 -nodes -keyout client.key \
	    -out client.csr -subj "/CN=coffer-test"
	printf 'extendedKeyUsage=clientAuth\n' >client.ext
	openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key \
	    -CAcreateserial -out client.crt -days 2 -extfile client.ext
	# A client certificate the server's CA never signed.
	openssl req -x509 -newkey rsa:2048 -nodes -keyout evil-ca.key \
	    -out evil-ca.crt -days 2 -subj "/CN=not-the-kmip-ca"
	openssl req -newkey rsa:2048 -nodes -keyout evil.key -out evil.csr \
	    -subj "/CN=coffer-test"
	openssl x509 -req -in evil.csr -CA evil-ca.crt -CAkey evil-ca.key \
	    -CAcreateserial -out evil.crt -days 2 -extfile client.ext
	chmod 600 ./*.key
) >"$T/pki.log" 2>&1 || skip_or_fail "openssl could not make certificates"

# ---- server: per-test database, free port, TLS 1.2 with client auth.
PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
S="$T/kmip"
mkdir -p "$S/policies"
cat >"$S/server.conf" <<EOF
[server]
hostname=127.0.0.1
port=$PORT
certificate_path=$P/server.crt
key_path=$P/server.key
ca_path=$P/ca.crt
auth_suite=TLS1.2
enable_tls_client_auth=True
tls_cipher_suites=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384
policy_path=$S/policies
database_path=$S/pykmip.db
logging_level=INFO
EOF

start_server() {
	local i
	(cd "$S" && exec setsid "$PY" /usr/bin/pykmip-server \
	    -f "$S/server.conf" -l "$S/server.log") >"$S/stdout" 2>&1 &
	SRV_PID=$!
	for i in $(seq 1 300); do
		if "$PY" -c "import socket; socket.create_connection(('127.0.0.1', $PORT), 0.2)" 2>/dev/null; then
			return 0
		fi
		kill -0 "$SRV_PID" 2>/dev/null || break
		sleep 0.1
	done
	return 1
}
start_server || { sed 's/^/# /' "$S/stdout" "$S/server.log" 2>/dev/null | tail -20;
	skip_or_fail "pykmip-server did not start"; }

# ---- an activated AES-256 key, made with PyKMIP's own client.
UID1=$("$PY" - "$PORT" "$P" 2>"$T/pyclient.err" <<'EOF'
import sys
from kmip.pie.client import ProxyKmipClient
from kmip.core import enums
port, p = int(sys.argv[1]), sys.argv[2]
c = ProxyKmipClient(hostname="127.0.0.1", port=port, cert=p + "/client.crt",
                    key=p + "/client.key", ca=p + "/ca.crt",
                    config_file="/dev/null")
with c:
    uid = c.create(enums.CryptographicAlgorithm.AES, 256,
                   cryptographic_usage_mask=[
                       enums.CryptographicUsageMask.ENCRYPT,
                       enums.CryptographicUsageMask.DECRYPT])
    c.activate(uid)
print(uid)
EOF
)
[ -n "$UID1" ]
_result $? "PyKMIP client created and activated an AES-256 key ($UID1)"
[ -n "$UID1" ] || { sed 's/^/# /' "$T/pyclient.err" | tail -5; done_testing; }

cat >>"$COFFER_HOME/coffer.conf" <<EOF

[kms.kmip]
type = kmip
host = 127.0.0.1
port = $PORT
ca = $P/ca.crt
cert = $P/client.crt
key = $P/client.key
key_id = $UID1
timeout = 5

[kms.evil]
type = kmip
host = 127.0.0.1
port = $PORT
ca = $P/ca.crt
cert = $P/evil.crt
key = $P/evil.key
key_id = $UID1
timeout = 5
EOF

WK="$COFFER_HOME/tenants/t1/keys/v1.wk"
expect 0 "tenant create t1 --kms kmip" tenant create t1 --kms kmip
check "the wrapped key names alg 2 (AES-256-GCM)" \
	test "$(od -An -tu1 -j10 -N1 "$WK" | tr -d ' ')" = 2
check "the blob carries the server's unique identifier" \
	bash -c "dd if='$WK' bs=1 skip=51 count=${#UID1} 2>/dev/null | grep -qx '$UID1'"
check "the wrapped key is 0600" test "$(stat -c %a "$WK")" = 600
expect 0 "tenant show names the kmip provider" tenant show t1
check "...with host:port" out_has "127.0.0.1:$PORT"

# ---- unlock through a real FUSE mount.
mounted() { grep -q " $MP " /proc/self/mountinfo; }
mount_t1() {
	local i
	"$COFFER" mount t1 "$MP" -f >"$T/mnt.out" 2>"$T/mnt.err" &
	MNT_PID=$!
	for i in $(seq 1 200); do
		mounted && return 0
		kill -0 "$MNT_PID" 2>/dev/null || break
		sleep 0.05
	done
	cat "$T/mnt.err" >"$ERR"
	MNT_PID=
	return 1
}
umount_t1() {
	"$COFFER" umount "$MP" >/dev/null 2>&1 || fusermount3 -u -z "$MP"
	wait "$MNT_PID" 2>/dev/null
	MNT_PID=
}
mkdir -p "$MP"
if [ -e /dev/fuse ] && command -v fusermount3 >/dev/null 2>&1 &&
    "$COFFER" mount --help 2>&1 | grep -qi mount; then
	: >"$OUT"; : >"$ERR"
	mount_t1
	_result $? "mount t1 unwraps its root key through the KMIP server"
	if [ -n "$MNT_PID" ]; then
		echo "kept by kmip" >"$MP/hello.txt"
		umount_t1
	fi
	mount_t1
	_result $? "remount t1"
	if [ -n "$MNT_PID" ]; then
		check "the file reads back after remount" \
			grep -qx "kept by kmip" "$MP/hello.txt"
		umount_t1
	fi
else
	echo "# no /dev/fuse or fusermount3: unlock is tested by rotate-kek"
fi

# ---- a tampered wrapped key: the server refuses to decrypt.
cp "$WK" "$T/v1.wk.good"
off=$((50 + 1 + ${#UID1} + 12 + 5))
flip_byte "$WK" "$off"
expect 3 "a tampered ciphertext is an integrity failure (rotate-kek)" \
	tenant rotate-kek t1
sed "s/^/# /" "$ERR"
check "...saying it does not authenticate" err_has "does not authenticate"
cp "$T/v1.wk.good" "$WK"
# The header (AAD) altered: key_version kept, reserved bits untouched,
# the KEK id changed, so the blob's identifier no longer matches.
flip_byte "$WK" 40
expect 3 "an altered header is an integrity failure" tenant rotate-kek t1
cp "$T/v1.wk.good" "$WK"

# ---- rotate-kek: a new key on the server, and unlock still works.
expect 0 "rotate-kek t1 creates a new KMIP key" tenant rotate-kek t1
UID2=$(tr -d '\n' <"$COFFER_HOME/kms/kmip/current" 2>/dev/null)
check "the provider's current key is a new one" \
	bash -c "[ -n '$UID2' ] && [ '$UID2' != '$UID1' ]"
check "the wrapped key now names the new key" \
	bash -c "dd if='$WK' bs=1 skip=51 count=${#UID2} 2>/dev/null | grep -qx '$UID2'"
check "the audit log records the new KEK with its identifier" \
	grep -q "kms.kek_created" "$COFFER_HOME/audit/audit.log"
expect 0 "t1 unlocks under the rotated key (rotate-kek again)" \
	tenant rotate-kek t1
if [ -e /dev/fuse ] && command -v fusermount3 >/dev/null 2>&1; then
	mount_t1
	_result $? "mount t1 after the rotation"
	if [ -n "$MNT_PID" ]; then
		check "the file still reads back" \
			grep -qx "kept by kmip" "$MP/hello.txt"
		# Root key rotation through the server while mounted: the
		# daemon unwraps the new version and re-encrypts.
		expect 0 "rotate-key t1 (mounted) wraps version 2 on the server" \
			tenant rotate-key t1
		check "...and the daemon loads it at once" \
			out_has "version 2 now"
		expect 0 "reencrypt t1 through the daemon" tenant reencrypt t1
		check "...leaving no file on version 1" out_has " 0 files still"
		check "...and the file reads back" \
			grep -qx "kept by kmip" "$MP/hello.txt"
		umount_t1
	fi
fi

# ---- a client certificate from another CA.
expect 4 "a client certificate the server does not trust is denied" \
	tenant create t2 --kms evil
sed "s/^/# /" "$ERR"
check "...with a clear error naming the certificate" \
	err_has "rejected the client certificate"
check "...and no tenant t2 was left behind" test ! -e "$COFFER_HOME/tenants/t2"

# ---- a client key others can read is refused before any connection.
chmod 644 "$P/client.key"
expect 4 "a client key readable by others is refused" tenant rotate-kek t1
check "...saying chmod 600" err_has "chmod 600"
chmod 600 "$P/client.key"

# ---- a server that accepts connections but never answers: timeout.
SILENT_PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$PY" -c "
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', $SILENT_PORT)); s.listen(8); time.sleep(60)" &
SILENT_PID=$!
sleep 0.5
cat >>"$COFFER_HOME/coffer.conf" <<EOF

[kms.silent]
type = kmip
host = 127.0.0.1
port = $SILENT_PORT
ca = $P/ca.crt
cert = $P/client.crt
key = $P/client.key
key_id = $UID1
timeout = 1
EOF
expect 1 "a server that never answers times out" tenant create t3 --kms silent
check "...saying so, with host:port" \
	bash -c "grep -q 'within 1 s' '$ERR' && grep -q '127.0.0.1:$SILENT_PORT' '$ERR'"
kill "$SILENT_PID" 2>/dev/null
wait "$SILENT_PID" 2>/dev/null
SILENT_PID=

# ---- the server is down.
# A mount made while it was up keeps working without it: the daemon
# holds the unwrapped keys and asks the server nothing more.
live=""
if [ -e /dev/fuse ] && command -v fusermount3 >/dev/null 2>&1 && mount_t1; then
	live=1
fi
stop_server
if [ -n "$live" ]; then
	echo "written while the KMS is down" >"$MP/down.txt" 2>/dev/null
	check "a running mount keeps reading with the server stopped" \
		grep -qx "kept by kmip" "$MP/hello.txt"
	check "...and writing" grep -qx "written while the KMS is down" "$MP/down.txt"
	rm -f "$MP/down.txt"
	umount_t1
fi
expect 1 "with the server stopped, unlock fails" tenant rotate-kek t1
sed "s/^/# /" "$ERR"
check "...naming the provider and host:port" \
	bash -c "grep -q \"KMS 'kmip'\" '$ERR' && grep -q '127.0.0.1:$PORT' '$ERR'"
if [ -e /dev/fuse ] && command -v fusermount3 >/dev/null 2>&1; then
	timeout 60 "$COFFER" mount t1 "$MP" -f >"$OUT" 2>"$ERR"
	RC=$?
	[ "$RC" = 1 ] && ! mounted
	_result $? "with the server stopped, mount fails with exit 1"
	check "...saying it cannot connect" err_has "cannot connect"
fi

expect 0 "the audit log (with kms.auth_failed records) verifies" audit verify
check "...and records the rejected certificate" \
	grep -q "kms.auth_failed" "$COFFER_HOME/audit/audit.log"

# Secrets never leak into logs or the home.
check "no private key text in coffer's output" \
	bash -c "! grep -q 'PRIVATE KEY' '$OUT' '$ERR'"
done_testing
