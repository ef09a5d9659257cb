#!/usr/bin/env python3
# keystore_kwp_vectors.py - prints the "wrapped_key_kwp" member of
# tests/vectors/keystore-v1.json: a wrapped-key file with alg 3 (AES-256
# key wrap with padding, RFC 5649, and a header MAC), docs/format/
# keystore.md "PKCS#11 key-wrap blob (alg 3)".  Run once; not built by
# meson.  Independent of coffer and of libsodium: RFC 5649 from Python's
# `cryptography` (checked against `openssl enc -id-aes256-wrap-pad -iv
# A65959A6`, which gives the same 40 bytes), crypto_kdf and the keyed
# BLAKE2b from hashlib, following libsodium's definitions.
import hashlib
import struct

from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

kek = bytes(range(0x60, 0x80))
root = bytes(range(0x40, 0x60))
tenant_id = bytes(range(0xA0, 0xB0))
kek_id = bytes(range(0xF0, 0x100))
key_version = 1

header = (b"\x89CFWK\r\n\x1a" + struct.pack("<H", 1) + bytes([3, 0]) +
          struct.pack("<I", key_version) + tenant_id + kek_id)
assert len(header) == 48
wrapped = aes_key_wrap_with_padding(kek, root)
assert len(wrapped) == 40
# crypto_kdf_derive_from_key(32, 1, "cf-kwmac", root): BLAKE2b keyed with
# the root key, salt = u64le(subkey id) || 8 zero bytes, personal = the
# context || 8 zero bytes, empty message.
mac_key = hashlib.blake2b(b"", digest_size=32, key=root,
                          salt=struct.pack("<Q", 1) + bytes(8),
                          person=b"cf-kwmac" + bytes(8)).digest()
# crypto_generichash(32, header || wrapped, mac_key)
mac = hashlib.blake2b(header + wrapped, digest_size=32, key=mac_key).digest()
blob = wrapped + mac
file = header + struct.pack("<H", len(blob)) + blob
assert len(file) == 122

fields = [("kek", kek), ("root", root), ("tenant_id", tenant_id),
          ("kek_id", kek_id)]
print('  "wrapped_key_kwp": {')
for k, v in fields:
    print('    "%s": "%s",' % (k, v.hex()))
print('    "key_version": %d,' % key_version)
for k, v in [("header", header), ("wrapped", wrapped), ("mac_key", mac_key),
             ("mac", mac)]:
    print('    "%s": "%s",' % (k, v.hex()))
print('    "file": "%s"' % file.hex())
print('  }')
