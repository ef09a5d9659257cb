/*
 * ks_secbuf.c - locked, guarded buffers for key material.
 *
 * Every key coffer holds in clear lives in one of these: sodium_malloc
 * places it between guard pages, mlocks it and marks it MADV_DONTDUMP;
 * sodium_free wipes it.  There is deliberately no way to print one.
 */
#include <errno.h>
#include <stdlib.h>

#include <sodium.h>

#include "ks_int.h"

struct cf_secbuf {
	size_t len;
	unsigned char *data;	/* sodium_malloc'd, len bytes */
};

int
cf_secbuf_new(struct cf_secbuf **out, size_t len)
{
	struct cf_secbuf *sb;

	*out = NULL;
	if (len == 0)
		cf_misuse("cf_secbuf_new: zero length");
	sb = calloc(1, sizeof(*sb));
	if (sb == NULL)
		return -ENOMEM;
	sb->data = sodium_malloc(len);
	if (sb->data == NULL) {
		free(sb);
		return ks_err(-ENOMEM, "cannot allocate locked memory "
		    "(RLIMIT_MEMLOCK too low?)");
	}
	sodium_memzero(sb->data, len);
	sb->len = len;
	*out = sb;
	return 0;
}

int
cf_secbuf_random(struct cf_secbuf **out, size_t len)
{
	int rc;

	rc = cf_secbuf_new(out, len);
	if (rc < 0)
		return rc;
	randombytes_buf((*out)->data, len);
	return 0;
}

void
cf_secbuf_free(struct cf_secbuf *sb)
{
	if (sb == NULL)
		return;
	sodium_free(sb->data);	/* wipes, checks the canary */
	free(sb);
}

unsigned char *
cf_secbuf_data(struct cf_secbuf *sb)
{
	return sb->data;
}

const unsigned char *
cf_secbuf_cdata(const struct cf_secbuf *sb)
{
	return sb->data;
}

size_t
cf_secbuf_len(const struct cf_secbuf *sb)
{
	return sb->len;
}

void
cf_secbuf_readonly(struct cf_secbuf *sb)
{
	if (sodium_mprotect_readonly(sb->data) != 0)
		cf_misuse("sodium_mprotect_readonly");
}

void
cf_secbuf_noaccess(struct cf_secbuf *sb)
{
	if (sodium_mprotect_noaccess(sb->data) != 0)
		cf_misuse("sodium_mprotect_noaccess");
}

void
cf_secbuf_readwrite(struct cf_secbuf *sb)
{
	if (sodium_mprotect_readwrite(sb->data) != 0)
		cf_misuse("sodium_mprotect_readwrite");
}
