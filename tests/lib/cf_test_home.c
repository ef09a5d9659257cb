/*
 * cf_test_home.c - a throwaway coffer home for keystore tests: the file
 * KMS with minimal Argon2id cost and a passphrase file.
 */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cf_test.h"

static char home[4096];
static char passfile[4096];

void
cf_test_set_pass(const char *pass)
{
	cf_test_write_file(passfile, pass, strlen(pass));
	chmod(passfile, 0600);
}

const char *
cf_test_home(const char *pass)
{
	char conf[4096 + 64], text[8192];

	snprintf(home, sizeof(home), "%s/home", cf_test_tmpdir());
	snprintf(passfile, sizeof(passfile), "%s/pass", cf_test_tmpdir());
	mkdir(home, 0700);
	cf_test_set_pass(pass);
	snprintf(conf, sizeof(conf), "%s/coffer.conf", home);
	snprintf(text, sizeof(text), "[kms.local]\ntype = file\n"
	    "passphrase_file = %s\nargon2_ops = 1\nargon2_mem_kib = 8\n",
	    passfile);
	cf_test_write_file(conf, text, strlen(text));
	return home;
}
