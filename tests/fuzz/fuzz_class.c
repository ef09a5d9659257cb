/*
 * fuzz_class.c - libFuzzer target for data class patterns
 * (docs/retention.md, Data classes): cf_bk_class_paths on the text
 * before the first NUL (a coffer.conf "paths" value), then
 * cf_bk_class_match on the rest as a path.
 *
 * Invariants: the parser gives 0 or -EINVAL; on 0 there are 1..16
 * patterns, none empty, none starting with '/', none with consecutive
 * "**" segments; a match is 0 or 1, the same with a leading '/', and the
 * root ("" or "/") never matches; every directory above a match may
 * contain it (cf_bk_class_may_contain, which prunes walks).
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cf_backup.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct cf_bk_class c;
	const uint8_t *nul = memchr(data, 0, size);
	size_t tlen = nul ? (size_t)(nul - data) : size, plen, i;
	char *text, *path, *slashed;
	int rc, m;

	text = malloc(tlen + 1);
	if (text == NULL)
		return 0;
	memcpy(text, data, tlen);
	text[tlen] = '\0';
	memset(&c, 0, sizeof(c));
	rc = cf_bk_class_paths(&c, text);
	free(text);
	if (rc != 0 && rc != -EINVAL)
		abort();
	if (rc != 0)
		return 0;
	if (c.npatterns == 0 || c.npatterns > CF_BK_CLASS_PATTERNS)
		abort();
	for (i = 0; i < c.npatterns; i++) {
		const char *p = c.patterns[i];
		int prev = 0, star;

		if (p[0] == '\0' || p[0] == '/')
			abort();
		while (p != NULL) {
			star = strncmp(p, "**", 2) == 0 && (p[2] == '/' ||
			    p[2] == '\0');
			if (star && prev)
				abort();	/* "**" twice in a row */
			prev = star;
			p = strchr(p, '/');
			p = p ? p + 1 : NULL;
		}
	}
	if (cf_bk_class_match(&c, "") != 0 || cf_bk_class_match(&c, "/") != 0)
		abort();
	if (nul == NULL)
		return 0;
	plen = size - tlen - 1;
	if (plen > 4096)
		return 0;
	path = malloc(plen + 1);
	slashed = malloc(plen + 2);
	if (path == NULL || slashed == NULL)
		abort();
	memcpy(path, nul + 1, plen);
	path[plen] = '\0';
	slashed[0] = '/';
	memcpy(slashed + 1, path, strlen(path) + 1);
	m = cf_bk_class_match(&c, path);
	if ((m != 0 && m != 1) || cf_bk_class_match(&c, slashed) != m)
		abort();
	/*
	 * Pruning is sound: every directory above a match (the root
	 * included) may hold it.  Paths as trees and directories give them:
	 * no empty segment, no leading or trailing '/'.
	 */
	if (m == 1 && path[0] != '/' && strstr(path, "//") == NULL &&
	    path[strlen(path) - 1] != '/') {
		if (cf_bk_class_may_contain(&c, "") != 1)
			abort();
		for (i = 0; path[i] != '\0'; i++) {
			if (path[i] != '/')
				continue;
			path[i] = '\0';
			if (cf_bk_class_may_contain(&c, path) != 1)
				abort();
			path[i] = '/';
		}
	}
	free(path);
	free(slashed);
	return 0;
}
