/*
 * fuzz_audit.c - libFuzzer target for one audit log line
 * (cf_ks_audit_parse_line, docs/format/audit.md), with a fixed 32-byte
 * MAC key of 0x42 bytes.
 *
 * The input is one line without its newline and without a terminating
 * NUL.  Malformed lines must give -EPROTO and a wrong MAC -EBADMSG; a line
 * that verifies must have filled the out-params.  Seeds that verify are
 * made with the same key (tests/fuzz/corpus/audit/).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "cf_keystore.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int inited;
	static unsigned char key[32];
	unsigned char prev_mac[32], mac[32];
	uint64_t seq = 0;
	int rc;

	if (!inited) {
		if (sodium_init() < 0)
			abort();
		memset(key, 0x42, sizeof(key));
		inited = 1;
	}
	rc = cf_ks_audit_parse_line(key, (const char *)data, size, &seq,
	    prev_mac, mac);
	if (rc > 0)
		abort();
	if (rc == 0) {
		/* Read every out-param so MSan/Valgrind-style tools see it. */
		volatile unsigned char sink = 0;
		size_t i;

		for (i = 0; i < sizeof(mac); i++)
			sink ^= prev_mac[i] ^ mac[i];
		(void)sink;
		(void)seq;
	}
	return 0;
}
