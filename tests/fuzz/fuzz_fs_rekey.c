/*
 * fuzz_fs_rekey.c - libFuzzer target for the re-encryption journal's
 * target path (docs/format/fs.md, Re-encryption, [FS-REKEY-1]): the
 * symlink store/cf.rekey names the file a crashed run was copying, and a
 * rerun copies over it, so it must never name anything outside data/.
 *
 * The input is the symlink's target.  fs_rekey_path_ok gives 0 or
 * -EPROTO only, and 0 only for "data/" followed by components none of
 * which is empty, "." or "..", with no NUL byte: checked here by an
 * independent split.
 */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fs_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int
reference(const char *s, size_t n)
{
	char buf[PATH_MAX];
	char *save = NULL, *c;
	size_t i;

	if (n >= PATH_MAX || n < 6 || memchr(s, '\0', n) != NULL ||
	    strncmp(s, "data/", 5) != 0 || s[n - 1] == '/')
		return 0;
	for (i = 1; i < n; i++)
		if (s[i] == '/' && s[i - 1] == '/')
			return 0;
	memcpy(buf, s + 5, n - 5);
	buf[n - 5] = '\0';
	for (c = strtok_r(buf, "/", &save); c != NULL;
	    c = strtok_r(NULL, "/", &save))
		if (strcmp(c, ".") == 0 || strcmp(c, "..") == 0)
			return 0;
	return 1;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int rc = fs_rekey_path_ok((const char *)data, size);

	if (rc != 0 && rc != -EPROTO)
		abort();
	if ((rc == 0) != reference((const char *)data, size))
		abort();
	return 0;
}
