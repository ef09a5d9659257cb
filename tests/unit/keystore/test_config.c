/*
 * test_config.c - coffer.conf parsing: values found where written, and
 * malformed, duplicated, oversized or binary input refused with -EPROTO
 * (or -EFBIG) rather than half-read.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cf_test.h"

static const char good[] =
	"; coffer configuration\n"
	"[kms.hsm]\n"
	"type = pkcs11\n"
	"module = /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so\n"
	"token = coffer\n"
	"\n"
	"[kms.local]\n"
	"type = file\n"
	"# a comment\n"
	"passphrase_file = /etc/coffer/pass\n"
	"[audit]\n"
	"key_file=/secure/audit.key\n";

static void
parse_good(void)
{
	struct cf_ks_config *cfg;

	CHECK_RC(cf_ks_config_parse(&cfg, good, strlen(good)), 0);
	CHECK(strcmp(cf_ks_config_get(cfg, "kms.hsm", "type"), "pkcs11") == 0);
	CHECK(strcmp(cf_ks_config_get(cfg, "kms.hsm", "token"), "coffer") == 0);
	CHECK(strcmp(cf_ks_config_get(cfg, "kms.local", "passphrase_file"),
	    "/etc/coffer/pass") == 0);
	CHECK(strcmp(cf_ks_config_get(cfg, "audit", "key_file"),
	    "/secure/audit.key") == 0);
	CHECK(cf_ks_config_get(cfg, "kms.local", "token") == NULL);
	CHECK(cf_ks_config_get(cfg, "kms.nope", "type") == NULL);
	cf_ks_config_free(cfg);
	cf_ks_config_free(NULL);
}

static void
reject_bad(void)
{
	static const char *const bad[] = {
		"[kms.a]\ntype = file\ntype = pkcs11\n",	/* duplicate */
		"[kms.a\ntype = file\n",			/* bracket */
		"[kms.a]\njust words\n",			/* no '=' */
		"[kms.a]\n= value\n",				/* no key */
	};
	struct cf_ks_config *cfg = (struct cf_ks_config *)1;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CHECK_RC(cf_ks_config_parse(&cfg, bad[i], strlen(bad[i])),
		    -EPROTO);
		CHECK(cfg == NULL);
	}
	CHECK_RC(cf_ks_config_parse(&cfg, "[a]\nk = v\0x = y\n", 16),
	    -EPROTO);
	CHECK(strstr(cf_ks_last_error(), "NUL") != NULL);
}

static void
reject_oversized(void)
{
	struct cf_ks_config *cfg;
	size_t big = 1024 * 1024 + 1;
	char *text = malloc(big);
	char *line;

	CHECK(text != NULL);
	memset(text, ';', big);
	CHECK_RC(cf_ks_config_parse(&cfg, text, big), -EFBIG);
	free(text);
	/* A value longer than the documented 4095 bytes is refused. */
	line = malloc(8192);
	CHECK(line != NULL);
	memcpy(line, "[a]\nk = ", 8);
	memset(line + 8, 'x', 5000);
	line[5008] = '\n';
	CHECK(cf_ks_config_parse(&cfg, line, 5009) < 0);
	free(line);
}

static void
load_missing_is_empty(void)
{
	struct cf_ks_config *cfg;
	char path[4200];

	snprintf(path, sizeof(path), "%s/none.conf", cf_test_tmpdir());
	CHECK_RC(cf_ks_config_load(&cfg, path), 0);
	CHECK(cf_ks_config_get(cfg, "kms.local", "type") == NULL);
	cf_ks_config_free(cfg);
	CHECK_RC(cf_test_write_file(path, good, strlen(good)), 0);
	CHECK_RC(cf_ks_config_load(&cfg, path), 0);
	CHECK(strcmp(cf_ks_config_get(cfg, "kms.local", "type"), "file") == 0);
	cf_ks_config_free(cfg);
}

static const struct cf_test_case cases[] = {
	CF_TEST(parse_good),
	CF_TEST(reject_bad),
	CF_TEST(reject_oversized),
	CF_TEST(load_missing_is_empty),
};

CF_TEST_MAIN(cases)
