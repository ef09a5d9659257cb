/*
 * bk_rekey.c - re-keying a repository's config: the config is sealed
 * anew under a newer root key version and carries the chunk key C, so
 * the version C derives from is no longer needed to open the repository
 * (docs/format/repository.md, [BK-CFG-2]; docs/kms.md, Root key
 * rotation).
 *
 * Blob ids, chunk boundaries and the index key stay what they were (they
 * derive from C), so dedup, trees and the index are untouched.  It does
 * not re-encrypt packs, indexes or snapshots: retention removes those
 * under the old version, or cf_bk_repo_reencrypt (bk_prune.c) rewrites
 * them.  The caller holds the repository's exclusive lock.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "bk_int.h"

int
cf_bk_repo_config_rekey(struct cf_bk_repo *r, uint32_t version)
{
	struct bk_config c;
	const struct cf_secbuf *chunk;
	struct cf_secbuf *copy = NULL;
	unsigned char *obj = NULL, *back = NULL, id[CF_BK_ID_BYTES];
	char *json = NULL;
	size_t jlen = 0, olen = 0, blen = 0;
	uint32_t from = 0;
	int rc;

	memset(&c, 0, sizeof(c));
	if (r->keys->writer || version == 0)
		return -EINVAL;
	if (version <= r->cfg_version)
		return -EALREADY;
	if (bk_keys_data(r->keys, version) == NULL)
		return -ENOKEY;
	chunk = bk_keys_chunk(r->keys, &from);
	if (chunk == NULL || from == 0 || from >= version)
		return -EINVAL;
	memcpy(c.repo_id, r->cfg.repo_id, sizeof(c.repo_id));
	memcpy(c.tenant, r->cfg.tenant, sizeof(c.tenant));
	c.created = r->cfg.created;
	c.min = r->cfg.min;
	c.avg = r->cfg.avg;
	c.max = r->cfg.max;
	c.chunk = (struct cf_secbuf *)(uintptr_t)chunk;	/* borrowed */
	c.chunk_version = from;
	rc = bk_config_encode(&c, &json, &jlen);
	c.chunk = NULL;
	if (rc < 0)
		goto out;
	rc = bk_config_seal(r->keys, version, (const unsigned char *)json,
	    jlen, NULL, NULL, &obj, &olen);
	if (rc < 0)
		goto out;
	rc = cf_secbuf_new(&copy, CF_KS_KEY_BYTES);
	if (rc < 0)
		goto out;
	memcpy(cf_secbuf_data(copy), cf_secbuf_cdata(chunk), CF_KS_KEY_BYTES);
	cf_secbuf_readonly(copy);
	/*
	 * Not exclusive: the one put that replaces an object.  Local
	 * stores rename a complete temporary over it, S3 replaces the key
	 * in one PUT: a reader (and a crash) sees the old config or the
	 * new one, both valid ([BK-LAY-2]).
	 */
	rc = cf_bk_store_put(r->store, CF_BK_KIND_CONFIG, "config", obj,
	    olen, 0);
	if (rc < 0)
		goto out;
	/* What a reader gets now: ours, unless another re-key raced us. */
	rc = cf_bk_store_get(r->store, CF_BK_KIND_CONFIG, "config",
	    CF_BK_OBJECT_MAX, &back, &blen);
	if (rc < 0)
		goto out;
	rc = -EIO;
	if (blen != olen || memcmp(back, obj, olen) != 0)
		goto out;
	cf_bk_storage_id(obj, olen, id);
	memcpy(r->config_id, id, CF_BK_ID_BYTES);
	r->cfg_version = version;
	cf_secbuf_free(r->cfg.chunk);
	r->cfg.chunk = copy;
	r->cfg.chunk_version = from;
	copy = NULL;
	rc = 0;
out:
	cf_secbuf_free(copy);
	bk_config_text_free(json, jlen);
	free(obj);
	free(back);
	return rc;
}

int
cf_bk_repo_chunk_version(const struct cf_bk_repo *r, uint32_t *from)
{
	*from = r->cfg.chunk != NULL ? r->cfg.chunk_version : 0;
	return r->cfg.chunk != NULL;
}
