# kms_pkcs11.sh - the pkcs11 KMS provider against a real SoftHSM2 token
# that this script initialises in its temp dir: create, unlock through a
# real FUSE mount, KEK and root key rotation on the token, moving a tenant
# from the file KMS (with kills part-way), refusals (extractable key, missing
# module, token or key), tampering (exit 3) and the PIN lockout (exit 4).
# Skips without softhsm2/opensc unless CI=true.  pkcs11-tool takes the
# PIN on its command line: acceptable here only, coffer reads a file.
. "$(dirname "$0")/lib.sh"

MOD=/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so
command -v softhsm2-util >/dev/null && command -v pkcs11-tool >/dev/null &&
	[ -f "$MOD" ] || skip_or_fail "softhsm2/opensc not installed"

PIN=p11-pin-7c3e91
mkdir -p "$T/tokens"
cat > "$T/softhsm2.conf" <<EOF
directories.tokendir = $T/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
EOF
export SOFTHSM2_CONF="$T/softhsm2.conf"
softhsm2-util --init-token --free --label coffer --so-pin 87654321 \
	--pin "$PIN" >/dev/null || skip_or_fail "softhsm2-util --init-token failed"
p11() { pkcs11-tool --module "$MOD" --token-label coffer --login --pin "$PIN" "$@"; }
p11 --keygen --key-type AES:32 --label coffer-kek --id 01 --sensitive \
	--usage-decrypt >/dev/null 2>&1 || skip_or_fail "pkcs11-tool --keygen failed"
p11 --keygen --key-type AES:32 --label loose-kek --id 02 --extractable \
	--usage-decrypt >/dev/null 2>&1
p11 --keygen --key-type AES:32 --label doomed-kek --id 03 --sensitive \
	--usage-decrypt >/dev/null 2>&1
printf '%s\n' "$PIN" > "$T/hsm.pin"
chmod 600 "$T/hsm.pin"
section() {	# section NAME KEY_LABEL [MODULE] [TOKEN]
	printf '[kms.%s]\ntype = pkcs11\nmodule = %s\ntoken = %s\npin_file = %s\nkey_label = %s\n\n' \
		"$1" "${3:-$MOD}" "${4:-coffer}" "$T/hsm.pin" "$2"
}
{
	section hsm coffer-kek
	section loose loose-kek
	section doomed doomed-kek
	section nomod coffer-kek "$T/no-such-module.so"
	section notoken coffer-kek "$MOD" no-such-token
} >> "$COFFER_HOME/coffer.conf"

run tenant create probe --kms hsm
if grep -q "not built" "$ERR"; then
	skip_or_fail "coffer was built without PKCS#11 support (p11-kit-1)"
fi

json_field() { "$COFFER" --json tenant show "$1" | python3 -c "import json,sys; print(json.load(sys.stdin)['$2'])"; }
wk() { echo "$COFFER_HOME/tenants/$1/keys/v1.wk"; }
byte_at() { od -An -tu1 -j "$2" -N1 "$1" | tr -d ' '; }

# Mounting needs root and /dev/fuse; without them, unlock through
# rotate-kek instead (which unwraps every version before rewrapping).
FUSE=0
[ "$(id -u)" = 0 ] && [ -c /dev/fuse ] && command -v fusermount3 >/dev/null &&
	FUSE=1
MP="$T/mnt"
mkdir -p "$MP"
# with_mount TENANT SHELL-COMMAND: mounts, runs the command, unmounts.
with_mount() {
	local pid i r
	"$COFFER" mount "$1" "$MP" -f >"$OUT" 2>"$ERR" &
	pid=$!
	for i in $(seq 100); do
		mountpoint -q "$MP" && break
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if ! mountpoint -q "$MP"; then
		wait "$pid"
		return 1
	fi
	bash -c "$2"
	r=$?
	fusermount3 -u -z "$MP"
	wait "$pid"
	return $r
}
# unlock_ok TENANT TEXT: the tenant unlocks (and its data reads TEXT).
unlock_ok() {
	if [ "$FUSE" = 1 ]; then
		with_mount "$1" "grep -qx '$2' '$MP/note'"
	else
		"$COFFER" tenant rotate-kek "$1" >"$OUT" 2>"$ERR"
	fi
}
put_note() {
	[ "$FUSE" = 1 ] || return 0
	with_mount "$1" "echo '$2' > '$MP/note'"
}

expect 0 "tenant create --kms hsm" tenant create acme --kms hsm
check "...show names the provider" test "$(json_field acme kms)" = hsm
check "...and a pkcs11 KEK" bash -c "'$COFFER' --json tenant show acme | grep -q \"pkcs11 KMS 'hsm' (token 'coffer')\""
check "wrapped key: 50-byte header + 60-byte GCM blob" test "$(stat -c %s "$(wk acme)")" = 110
check "...alg byte is 2 (AES-256-GCM)" test "$(byte_at "$(wk acme)" 10)" = 2
check "...blob length field is 60" test "$(byte_at "$(wk acme)" 48)" = 60
check "the KEK on the token is never extractable" bash -c "pkcs11-tool --module '$MOD' --token-label coffer --login --pin '$PIN' --list-objects --type secrkey 2>/dev/null | grep -A4 'label: *coffer-kek\$' | grep -q 'never extractable'"
check "put data through a real mount (or skip without FUSE)" put_note acme hello-acme
check "unlock through the HSM works" unlock_ok acme hello-acme

k1=$(json_field acme kek)
expect 0 "rotate-kek makes a new KEK on the token" tenant rotate-kek acme
k2=$(json_field acme kek)
check "...the tenant is on another KEK" test "$k1" != "$k2"
check "...labelled coffer-kek.v2, sensitive" bash -c "pkcs11-tool --module '$MOD' --token-label coffer --login --pin '$PIN' --list-objects --type secrkey 2>/dev/null | grep -A4 'label: *coffer-kek.v2' | grep -q 'never extractable'"
check "...and the data still unlocks" unlock_ok acme hello-acme

# Root key rotation through the token (docs/kms.md, Root key rotation).
expect 0 "rotate-key wraps a new root key version on the token" tenant rotate-key acme
check "...key_version 2" test "$(json_field acme key_version)" = 2
check "...its wrapped key is AES-GCM too" test "$(byte_at "$COFFER_HOME/tenants/acme/keys/v2.wk" 10)" = 2
expect 0 "reencrypt unlocks every version through the HSM" tenant reencrypt acme
check "...and the data still unlocks" unlock_ok acme hello-acme
if [ "$FUSE" = 1 ]; then
	check "rotate-key on a mounted HSM tenant: its daemon loads version 3" \
	    with_mount acme "'$COFFER' tenant rotate-key acme | grep -q 'version 3 now' && '$COFFER' tenant reencrypt acme | grep -q ' 0 files still' && grep -qx hello-acme '$MP/note'"
else
	check "rotate-key on a mounted HSM tenant # SKIP no FUSE" true
fi

expect 0 "a file-KMS tenant" tenant create globex
check "...with data" put_note globex hello-globex
expect 0 "rotate-kek --to hsm moves it to the HSM" tenant rotate-kek globex --to hsm
check "...show names hsm" test "$(json_field globex kms)" = hsm
check "...its wrapped key is AES-GCM now" test "$(byte_at "$(wk globex)" 10)" = 2
check "...and it unlocks through the HSM" unlock_ok globex hello-globex

expect 0 "another file-KMS tenant" tenant create initech
check "...with data" put_note initech hello-initech
for step in 1 2 3; do
	COFFER_TEST_KILL_AT=$step "$COFFER" tenant rotate-kek initech --to hsm \
		>"$OUT" 2>"$ERR"
	RC=$?
	check "kill -9 at move step $step" test "$RC" = 137
	check "...leaves the tenant usable" unlock_ok initech hello-initech
done
expect 0 "a rerun finishes the move" tenant rotate-kek initech --to hsm
check "...now on hsm" test "$(json_field initech kms)" = hsm
check "...and usable" unlock_ok initech hello-initech

expect 1 "an extractable key is refused" tenant create bad --kms loose
check "...saying why" err_has "extractable"
expect 1 "a module that does not load" tenant create bad --kms nomod
check "...names the provider and module" err_has "KMS 'nomod' (pkcs11): cannot load module"
expect 1 "a missing token" tenant create bad --kms notoken
check "...is named" err_has "no token labelled 'no-such-token'"

expect 0 "a tenant on a key about to be deleted" tenant create doom --kms doomed
p11 --delete-object --type secrkey --label doomed-kek >/dev/null 2>&1
expect 1 "key deleted from the token: clear error" tenant rotate-kek doom
check "...saying the KEK is not on the token" err_has "is not on token 'coffer'"

cp "$(wk acme)" "$T/acme.wk"
python3 -c "
import sys; p=sys.argv[1]; b=bytearray(open(p,'rb').read()); b[80]^=1; open(p,'wb').write(b)" "$(wk acme)"
expect 3 "a tampered wrapped key is an integrity failure" tenant rotate-kek acme
check "...that says so" err_has "does not authenticate"
cp "$T/acme.wk" "$(wk acme)"
expect 0 "the restored file unlocks" tenant rotate-kek acme

# mechanism = aes-key-wrap-pad: RFC 5649 through C_WrapKey/C_UnwrapKey
# and a header MAC, alg 3 (docs/kms.md, docs/format/keystore.md).  The
# KEK is imported with a known value (the vector's), so the blob can be
# checked independently of coffer: Python's RFC 5649 unwrap and MAC.
KWP_KEK=606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f
python3 -c "import sys; sys.stdout.buffer.write(bytes.fromhex('$KWP_KEK'))" > "$T/kwp-kek.bin"
p11 --write-object "$T/kwp-kek.bin" --type secrkey --key-type AES:32 \
	--label kwp-kek --id 11 --sensitive --usage-wrap >/dev/null 2>&1
rm -f "$T/kwp-kek.bin"
p11 --keygen --key-type AES:32 --label sw-kek --id 12 --sensitive \
	--usage-decrypt --usage-wrap >/dev/null 2>&1
{
	section kwp kwp-kek
	echo "mechanism = aes-key-wrap-pad"
	echo
	section sw sw-kek
	section nowrap coffer-kek
	echo "mechanism = aes-key-wrap-pad"
	echo
	section badmech coffer-kek
	echo "mechanism = aes-ecb"
	echo
} >> "$COFFER_HOME/coffer.conf"
# kwp_check FILE: the blob is RFC 5649 of a root key under the KEK, then
# BLAKE2b-256(crypto_kdf(root, 1, "cf-kwmac"), header || wrapped).
kwp_check() {
	python3 - "$1" "$KWP_KEK" <<'PY'
import hashlib, struct, sys
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding
f = open(sys.argv[1], "rb").read()
kek = bytes.fromhex(sys.argv[2])
assert len(f) == 122 and f[10] == 3 and f[48:50] == b"\x48\x00"
hdr, wrapped, mac = f[:48], f[50:90], f[90:]
root = aes_key_unwrap_with_padding(kek, wrapped)
assert len(root) == 32
mk = hashlib.blake2b(b"", digest_size=32, key=root,
    salt=struct.pack("<Q", 1) + bytes(8), person=b"cf-kwmac" + bytes(8)).digest()
assert hashlib.blake2b(hdr + wrapped, digest_size=32, key=mk).digest() == mac
PY
}
# unwrap_refused TENANT DESC: unwrapping fails with exit 3 and the message.
unwrap_refused() {
	expect 3 "$2" tenant rotate-kek "$1"
	check "...does not authenticate under KMS 'kwp'" err_has "wrapped key does not authenticate under KMS 'kwp'"
}

expect 0 "tenant create on a KMS with mechanism aes-key-wrap-pad" tenant create wrapco --kms kwp
check "...wrapped key: 50-byte header + 40-byte RFC 5649 wrap + 32-byte MAC" test "$(stat -c %s "$(wk wrapco)")" = 122
check "...alg byte is 3" test "$(byte_at "$(wk wrapco)" 10)" = 3
check "...blob length field is 72" test "$(byte_at "$(wk wrapco)" 48)" = 72
check "...the token's wrap is RFC 5649 and the MAC is as specified (Python)" kwp_check "$(wk wrapco)"
check "...put data through a real mount" put_note wrapco hello-wrapco
check "...and unlock through C_UnwrapKey works" unlock_ok wrapco hello-wrapco
k1=$(json_field wrapco kek)
expect 0 "rotate-kek of a key-wrap tenant" tenant rotate-kek wrapco
check "...moves it to a new KEK" test "$k1" != "$(json_field wrapco kek)"
check "...still alg 3" test "$(byte_at "$(wk wrapco)" 10)" = 3
check "...the new KEK may wrap and unwrap, not encrypt" bash -c "pkcs11-tool --module '$MOD' --token-label coffer --login --pin '$PIN' --list-objects --type secrkey 2>/dev/null | grep -A4 'label: *kwp-kek.v2\$' | grep -q 'Usage: *wrap, unwrap\$'"
check "...and the data still unlocks" unlock_ok wrapco hello-wrapco
expect 0 "rotate-key: version 2 wrapped the same way" tenant rotate-key wrapco
check "...alg 3" test "$(byte_at "$COFFER_HOME/tenants/wrapco/keys/v2.wk" 10)" = 3
expect 0 "a second key-wrap tenant on the same KEK" tenant create wrapco2 --kms kwp

# Each tampering is followed by the intact file and a good unlock, which
# resets the tenant's lockout count.
cp "$(wk wrapco)" "$T/wrapco.wk"
flip_byte "$(wk wrapco)" 100
unwrap_refused wrapco "a flipped MAC byte is refused (exit 3)"
cp "$T/wrapco.wk" "$(wk wrapco)"
check "...the intact file unlocks again" unlock_ok wrapco hello-wrapco
flip_byte "$(wk wrapco)" 60
unwrap_refused wrapco "a flipped byte of the RFC 5649 wrap is refused (exit 3)"
cp "$T/wrapco.wk" "$(wk wrapco)"
check "...the intact file unlocks again" unlock_ok wrapco hello-wrapco
# Another tenant's wrapped key with the tenant id rewritten to pass the
# tenant/version check: the wrap unwraps (key wrap has no AAD), the MAC
# must not verify.
python3 -c "
import sys; s=open(sys.argv[1],'rb').read(); d=bytearray(open(sys.argv[2],'rb').read())
d[16:32]=s[16:32]; open(sys.argv[3],'wb').write(d)" "$(wk wrapco)" "$(wk wrapco2)" "$T/swapped.wk"
cp "$T/swapped.wk" "$(wk wrapco)"
unwrap_refused wrapco "another tenant's wrapped key, tenant id rewritten, is refused (exit 3)"
cp "$T/wrapco.wk" "$(wk wrapco)"
check "...the intact file unlocks again" unlock_ok wrapco hello-wrapco
# Version 2's wrapped key as version 1, key version rewritten.
python3 -c "
import sys; d=bytearray(open(sys.argv[1],'rb').read()); d[12:16]=(1).to_bytes(4,'little')
open(sys.argv[2],'wb').write(d)" "$COFFER_HOME/tenants/wrapco/keys/v2.wk" "$(wk wrapco)"
unwrap_refused wrapco "version 2's wrapped key as version 1, key version rewritten, is refused (exit 3)"
cp "$T/wrapco.wk" "$(wk wrapco)"
check "...the intact file unlocks again" unlock_ok wrapco hello-wrapco
cp "$(wk wrapco2)" "$(wk wrapco)"
expect 3 "another tenant's wrapped key as it is: refused before unwrapping" tenant rotate-kek wrapco
check "...as a swapped file" err_has "file swapped"
cp "$T/wrapco.wk" "$(wk wrapco)"
check "...the intact file unlocks again" unlock_ok wrapco hello-wrapco

# Unwrapping follows the file's alg, not the configuration.
expect 0 "an aes-gcm tenant" tenant create swco --kms sw
check "...alg 2" test "$(byte_at "$(wk swco)" 10)" = 2
check "...with data" put_note swco hello-swco
sed -i '/^key_label = sw-kek$/a mechanism = aes-key-wrap-pad' "$COFFER_HOME/coffer.conf"
check "after the config switches to aes-key-wrap-pad it still unlocks" unlock_ok swco hello-swco
expect 0 "rotate-kek rewraps under the configured mechanism" tenant rotate-kek swco
check "...alg 3 now" test "$(byte_at "$(wk swco)" 10)" = 3
check "...and it unlocks" unlock_ok swco hello-swco
sed -i '/^key_label = sw-kek$/{n;/^mechanism = aes-key-wrap-pad$/d}' "$COFFER_HOME/coffer.conf"
check "(the config is back to aes-gcm)" bash -c "! grep -A1 '^key_label = sw-kek\$' '$COFFER_HOME/coffer.conf' | grep -q mechanism"
check "...an alg-3 tenant still unlocks under an aes-gcm config" unlock_ok swco hello-swco

expect 1 "aes-key-wrap-pad with a KEK that may not wrap is refused" tenant create bad --kms nowrap
check "...saying CKA_WRAP is false" err_has "has CKA_WRAP false"
run tenant create bad --kms badmech
check "an unknown mechanism is refused (exit 1)" test "$RC" = 1
check "...naming the ones there are" err_has "mechanism 'aes-ecb' is not supported; use aes-gcm or aes-key-wrap-pad"

chmod 644 "$T/hsm.pin"
expect 4 "a world-readable PIN file is refused" tenant rotate-kek acme
check "...saying why" err_has "chmod 600"
chmod 600 "$T/hsm.pin"

export COFFER_NOW=2026-05-01T08:00:00Z
printf 'wrong-pin\n' > "$T/hsm.pin"
expect 4 "wrong PIN 1" tenant rotate-kek acme
check "...counted against kms.hsm" err_has "kms.hsm (1 of 3"
expect 4 "wrong PIN 2" tenant rotate-kek acme
expect 4 "wrong PIN 3 locks" tenant rotate-kek acme
check "...until 08:30" err_has "locked until 2026-05-01T08:30:00Z"
printf '%s\n' "$PIN" > "$T/hsm.pin"
expect 4 "the right PIN is refused while locked" tenant rotate-kek acme
check "...with a clear message" err_has "kms.hsm is locked"
export COFFER_NOW=2026-05-01T08:31:00Z
expect 0 "after 30 minutes the right PIN works" tenant rotate-kek acme
unset COFFER_NOW
check "...and the data is intact" unlock_ok acme hello-acme

check "the PIN is nowhere in the home" bash -c "! grep -rq -- '$PIN' '$COFFER_HOME'"
check "...nor in the last output" bash -c "! grep -q -- '$PIN' '$OUT' '$ERR'"
expect 0 "the audit log verifies" audit verify
done_testing
