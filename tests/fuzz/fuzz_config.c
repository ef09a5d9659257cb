/*
 * fuzz_config.c - libFuzzer target for the coffer.conf parser
 * (cf_ks_config_parse: INI through inih, limits in docs/format/config.md).
 *
 * The input is handed over as it is, with no terminating NUL, to check
 * that the parser honours the length.  A parsed configuration is queried
 * for the keys coffer reads, and for every name it holds through the
 * lookups a real caller would make, then freed.  It does not check what
 * values mean: the KMS and tenant code own that.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "cf_keystore.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const lookups[][2] = {
	{ "kms.local", "type" },
	{ "kms.local", "passphrase_file" },
	{ "kms.hsm", "module" },
	{ "kms.hsm", "pin_file" },
	{ "defaults", "cipher" },
	{ "defaults", "repo" },
	{ "audit", "path" },
	{ "", "" },
	{ "", "type" },
};

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int inited;
	struct cf_ks_config *cfg = NULL;
	const char *v;
	size_t i;
	int rc;

	if (!inited) {
		if (sodium_init() < 0)
			abort();
		inited = 1;
	}
	rc = cf_ks_config_parse(&cfg, (const char *)data, size);
	if (rc > 0)
		abort();
	if (rc < 0) {
		if (cfg != NULL)
			abort();
		return 0;
	}
	if (cfg == NULL)
		abort();
	for (i = 0; i < sizeof(lookups) / sizeof(lookups[0]); i++) {
		v = cf_ks_config_get(cfg, lookups[i][0], lookups[i][1]);
		/* Touch every byte so ASan sees a bad string. */
		if (v != NULL && strlen(v) > size)
			abort();
	}
	cf_ks_config_free(cfg);
	return 0;
}
