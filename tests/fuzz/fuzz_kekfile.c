/*
 * fuzz_kekfile.c - libFuzzer target for the file-KMS KEK file decoder
 * (cf_ks_kekfile_open, docs/format/keystore.md), with the passphrase
 * "fuzz".
 *
 * The decoder must reject malformed images and out-of-range Argon2id
 * parameters before hashing, and must report a wrong passphrase or a
 * tampered image as -EBADMSG without leaking the half-built key.
 *
 * Argon2id is slow on purpose, so inputs whose parameters are inside the
 * spec's accepted range (ops 1..16, mem up to 4 GiB) but cost more than a
 * small budget are skipped: running them shows nothing the cheap ones do
 * not, and they would turn the fuzz run into an Argon2 benchmark.  Values
 * beyond the spec's limits still go to the decoder, which must reject them
 * without hashing.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "cf_keystore.h"

#define KK_BYTES 128U			/* size of a KEK file image */
#define KK_OPS_MAX 16U			/* spec: opslimit 1..16 */
#define KK_MEM_MAX (4ULL << 30)		/* spec: memlimit up to 4 GiB */
#define FUZZ_COST_MAX (256ULL << 10)	/* ops * mem bytes we will hash */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t
le(const uint8_t *p, size_t n)
{
	uint64_t v = 0;

	while (n-- > 0)
		v = (v << 8) | p[n];
	return v;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int inited;
	struct cf_secbuf *kek = NULL;
	unsigned char kek_id[CF_KS_ID_BYTES];
	uint64_t ops, mem;
	int rc;

	if (!inited) {
		if (sodium_init() < 0)
			abort();
		inited = 1;
	}
	if (size == KK_BYTES) {
		ops = le(data + 12, 4);
		mem = le(data + 16, 8);
		if (ops <= KK_OPS_MAX && mem <= KK_MEM_MAX &&
		    ops * mem > FUZZ_COST_MAX)
			return 0;
	}
	rc = cf_ks_kekfile_open(data, size, "fuzz", 4, kek_id, &kek);
	if (rc > 0)
		abort();
	if (rc < 0) {
		/* Out-params are reset on entry and stay empty on failure. */
		if (kek != NULL)
			abort();
		return 0;
	}
	if (kek == NULL || cf_secbuf_len(kek) != CF_KS_KEY_BYTES)
		abort();
	cf_secbuf_free(kek);
	return 0;
}
