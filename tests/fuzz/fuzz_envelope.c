/*
 * fuzz_envelope.c - libFuzzer target for the wrapped-key file decoder
 * (cf_ks_envelope_decode, docs/format/keystore.md).
 *
 * Any input must be rejected cleanly or decoded.  A decoded envelope must
 * re-encode to exactly the input bytes: the format has one encoding per
 * value (reserved bytes zero, no trailing bytes), so a decoder that
 * accepts two images for one envelope is a bug.  The encoder must also
 * refuse a buffer one byte too small.  It does not unwrap anything: no
 * KEK is involved.
 */
#include <errno.h>
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
	static struct cf_ks_envelope env;
	static unsigned char out[CF_KS_ENVELOPE_HEADER_BYTES +
	    CF_KS_ENVELOPE_BLOB_MAX + 64];
	size_t len = 0;
	int rc;

	if (!inited) {
		if (sodium_init() < 0)
			abort();
		inited = 1;
	}
	rc = cf_ks_envelope_decode(&env, data, size);
	if (rc > 0)
		abort();
	if (rc < 0)
		return 0;
	if (env.blob_len > CF_KS_ENVELOPE_BLOB_MAX)
		abort();
	rc = cf_ks_envelope_encode(&env, out, sizeof(out), &len);
	if (rc != 0)
		abort();
	if (len != size || memcmp(out, data, size) != 0)
		abort();
	/* The AAD the decoder kept must be the header the encoder builds. */
	if (memcmp(env.header, data, CF_KS_ENVELOPE_HEADER_BYTES) != 0)
		abort();
	len = 1;
	rc = cf_ks_envelope_encode(&env, out, size - 1, &len);
	if (rc != -ENOSPC || len != 0)
		abort();
	return 0;
}
