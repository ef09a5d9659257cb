/*
 * bk_snapshot.c - the JSON plaintexts: snapshots ([BK-SNAP-1]) and the
 * repository config ([BK-CFG-1]), with jansson.  Encoders write
 * JSON_COMPACT | JSON_SORT_KEYS; decoders are strict: every key known,
 * every type and range checked, duplicates and NULs refused.
 *
 * Sealing and storing these objects is bk_repo.c's job.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sodium.h>

#include "bk_int.h"

#define MAX_TAGS 256U
#define MAX_TAG 255U
#define MAX_PATHS 4096U
#define MAX_PATH 4095U
#define MAX_HOST 255U

static const char *const consistency_values[] = {
	"offline", "freeze", "cow", "stream", "none",
};

static int
consistency_ok(const char *s)
{
	size_t i;

	for (i = 0; i < sizeof(consistency_values) / sizeof(*consistency_values);
	    i++)
		if (strcmp(s, consistency_values[i]) == 0)
			return 1;
	return 0;
}

static json_t *
hexval(const unsigned char *b, size_t n)
{
	char h[2 * CF_BK_ID_BYTES + 1];

	sodium_bin2hex(h, sizeof(h), b, n);
	return json_string(h);
}

/* Lowercase hex of exactly n bytes. */
static int
unhex(const char *s, unsigned char *out, size_t n)
{
	size_t i, got = 0;

	if (s == NULL || strlen(s) != 2 * n)
		return -EPROTO;
	for (i = 0; i < 2 * n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') ||
		    (s[i] >= 'a' && s[i] <= 'f')))
			return -EPROTO;
	if (sodium_hex2bin(out, n, s, 2 * n, NULL, &got, NULL) != 0 ||
	    got != n)
		return -EPROTO;
	return 0;
}

static int
str_ok(const char *s, size_t max)
{
	size_t l = s != NULL ? strlen(s) : 0;

	return l >= 1 && l <= max;
}

/* json_object_set_new that fails on a NULL value. */
static int
set(json_t *o, const char *k, json_t *v)
{
	if (v == NULL)
		return -ENOMEM;
	return json_object_set_new(o, k, v) == 0 ? 0 : -ENOMEM;
}

static json_t *
uint_json(uint64_t v)
{
	if (v > (uint64_t)INT64_MAX)
		return NULL;
	return json_integer((json_int_t)v);
}

static int
dump(json_t *o, char **out, size_t *len)
{
	char *s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);

	if (s == NULL)
		return -ENOMEM;
	*out = s;
	*len = strlen(s);
	return 0;
}

/* Only the listed keys, each present. */
static int
keys_exact(json_t *o, const char *const *keys, size_t n, size_t optional)
{
	const char *k;
	json_t *v;
	size_t i, found = 0;

	if (!json_is_object(o))
		return -EPROTO;
	json_object_foreach(o, k, v) {
		for (i = 0; i < n; i++)
			if (strcmp(k, keys[i]) == 0)
				break;
		if (i == n)
			return -EPROTO;
		found++;
	}
	(void)v;
	for (i = 0; i < n; i++)
		if (json_object_get(o, keys[i]) == NULL && i < n - optional)
			return -EPROTO;
	return 0;
}

static int
get_uint(json_t *o, const char *k, uint64_t *v)
{
	json_t *j = json_object_get(o, k);

	if (!json_is_integer(j) || json_integer_value(j) < 0)
		return -EPROTO;
	*v = (uint64_t)json_integer_value(j);
	return 0;
}

/* ---- snapshots ---------------------------------------------------------- */

static const char *const stats_keys[] = {
	"bytes", "dirs", "duration_ns", "files", "new_blobs", "new_bytes",
	"pause_ns", "stored_bytes",
};

static uint64_t *
stat_field(struct cf_bk_snapshot_stats *st, size_t i)
{
	uint64_t *f[] = {
		&st->bytes, &st->dirs, &st->duration_ns, &st->files,
		&st->new_blobs, &st->new_bytes, &st->pause_ns,
		&st->stored_bytes,
	};

	return f[i];
}

/* [BK-SNAP-2] 1..CF_BK_SNAP_KEY_VERSIONS_MAX versions >= 1, increasing. */
static int
key_versions_ok(const uint32_t *v, size_t n)
{
	size_t i;

	if (n == 0 || n > CF_BK_SNAP_KEY_VERSIONS_MAX)
		return 0;
	for (i = 0; i < n; i++)
		if (v[i] == 0 || (i > 0 && v[i] <= v[i - 1]))
			return 0;
	return 1;
}

static json_t *
key_versions_json(const uint32_t *v, size_t n)
{
	json_t *a = json_array();
	size_t i;

	if (a == NULL)
		return NULL;
	for (i = 0; i < n; i++) {
		if (json_array_append_new(a, json_integer(v[i])) != 0) {
			json_decref(a);
			return NULL;
		}
	}
	return a;
}

static int
dec_key_versions(json_t *a, struct cf_bk_snapshot *s)
{
	json_int_t x;
	size_t i, n;

	if (!json_is_array(a))
		return -EPROTO;
	n = json_array_size(a);
	if (n == 0 || n > CF_BK_SNAP_KEY_VERSIONS_MAX)
		return -EPROTO;
	for (i = 0; i < n; i++) {
		if (!json_is_integer(json_array_get(a, i)))
			return -EPROTO;
		x = json_integer_value(json_array_get(a, i));
		if (x < 1 || x > (json_int_t)UINT32_MAX)
			return -EPROTO;
		s->key_versions[i] = (uint32_t)x;
	}
	if (!key_versions_ok(s->key_versions, n))
		return -EPROTO;
	s->nkey_versions = n;
	s->has_key_versions = 1;
	return 0;
}

int
cf_bk_snapshot_add_key_versions(struct cf_bk_snapshot *s,
    const uint32_t *versions, size_t n)
{
	size_t i, j;

	if (!s->has_key_versions)
		return 0;
	for (i = 0; i < n; i++) {
		if (versions[i] == 0)
			cf_misuse("cf_bk_snapshot_add_key_versions: "
			    "version 0");
		for (j = 0; j < s->nkey_versions &&
		    s->key_versions[j] < versions[i]; j++)
			;
		if (j < s->nkey_versions && s->key_versions[j] == versions[i])
			continue;
		if (s->nkey_versions == CF_BK_SNAP_KEY_VERSIONS_MAX) {
			/* Too many to record: unknown, never incomplete. */
			s->has_key_versions = 0;
			s->nkey_versions = 0;
			return -E2BIG;
		}
		memmove(s->key_versions + j + 1, s->key_versions + j,
		    (s->nkey_versions - j) * sizeof(*s->key_versions));
		s->key_versions[j] = versions[i];
		s->nkey_versions++;
	}
	return 0;
}

int
cf_bk_snapshot_needs_version(const struct cf_bk_snapshot *s, uint32_t v)
{
	size_t i;

	for (i = 0; s->has_key_versions && i < s->nkey_versions; i++)
		if (s->key_versions[i] == v)
			return 1;
	return 0;
}

static json_t *
str_array(char *const *v, size_t n, size_t max)
{
	json_t *a = json_array();
	size_t i;

	if (a == NULL)
		return NULL;
	for (i = 0; i < n; i++) {
		if (!str_ok(v[i], max) ||
		    json_array_append_new(a, json_string(v[i])) != 0) {
			json_decref(a);
			return NULL;
		}
	}
	return a;
}

int
cf_bk_snapshot_encode(const struct cf_bk_snapshot *s, char **out,
    size_t *len)
{
	struct cf_bk_snapshot_stats st = s->stats;
	json_t *o = NULL, *stats = NULL;
	size_t i;
	int rc = -EINVAL;

	*out = NULL;
	*len = 0;
	if (s->time < 0 || !str_ok(s->hostname, MAX_HOST) ||
	    s->ntags > MAX_TAGS || s->npaths == 0 || s->npaths > MAX_PATHS ||
	    s->consistency == NULL || !consistency_ok(s->consistency) ||
	    (s->has_key_versions &&
	    !key_versions_ok(s->key_versions, s->nkey_versions)))
		return -EINVAL;
	o = json_object();
	stats = json_object();
	if (o == NULL || stats == NULL)
		goto out;
	for (i = 0; i < sizeof(stats_keys) / sizeof(*stats_keys); i++)
		if (set(stats, stats_keys[i], uint_json(*stat_field(&st, i))))
			goto out;
	if (set(o, "time", json_integer(s->time)) ||
	    set(o, "tenant", hexval(s->tenant, CF_KS_ID_BYTES)) ||
	    set(o, "hostname", json_string(s->hostname)) ||
	    set(o, "tags", str_array(s->tags, s->ntags, MAX_TAG)) ||
	    set(o, "paths", str_array(s->paths, s->npaths, MAX_PATH)) ||
	    set(o, "tree", hexval(s->tree, CF_BK_ID_BYTES)) ||
	    set(o, "consistency", json_string(s->consistency)))
		goto out;
	if (s->has_parent &&
	    set(o, "parent", hexval(s->parent, CF_BK_ID_BYTES)))
		goto out;
	if (s->has_key_versions && set(o, "key_versions",
	    key_versions_json(s->key_versions, s->nkey_versions)))
		goto out;
	rc = set(o, "stats", stats);
	stats = NULL;
	if (rc < 0)
		goto out;
	rc = dump(o, out, len);
out:
	json_decref(stats);
	json_decref(o);
	return rc;
}

static int
dec_strs(json_t *a, size_t min, size_t maxn, size_t maxlen, char ***out,
    size_t *n)
{
	size_t i, cnt;

	*out = NULL;
	*n = 0;
	if (!json_is_array(a))
		return -EPROTO;
	cnt = json_array_size(a);
	if (cnt < min || cnt > maxn)
		return -EPROTO;
	*out = calloc(cnt ? cnt : 1, sizeof(char *));
	if (*out == NULL)
		return -ENOMEM;
	for (i = 0; i < cnt; i++) {
		const char *v = json_string_value(json_array_get(a, i));

		if (!str_ok(v, maxlen))
			return -EPROTO;
		(*out)[i] = strdup(v);
		if ((*out)[i] == NULL)
			return -ENOMEM;
		(*n)++;
	}
	return 0;
}

int
cf_bk_snapshot_decode(struct cf_bk_snapshot **out, const char *buf,
    size_t len)
{
	static const char *const keys[] = {
		"consistency", "hostname", "paths", "stats", "tags", "tenant",
		"time", "tree", "parent", "key_versions",
	};
	struct cf_bk_snapshot *s = NULL;
	json_error_t e;
	json_t *o, *t;
	const char *str;
	size_t i;
	int rc = -EPROTO;

	*out = NULL;
	if (len > CF_BK_OBJECT_MAX)
		return -EPROTO;
	o = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &e);
	if (o == NULL)
		return -EPROTO;
	/* parent and key_versions ([BK-SNAP-2]) are optional. */
	rc = keys_exact(o, keys, sizeof(keys) / sizeof(*keys), 2);
	if (rc < 0)
		goto out;
	rc = -ENOMEM;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		goto out;
	rc = -EPROTO;
	t = json_object_get(o, "time");
	if (!json_is_integer(t) || json_integer_value(t) < 0)
		goto out;
	s->time = json_integer_value(t);
	if (unhex(json_string_value(json_object_get(o, "tenant")), s->tenant,
	    CF_KS_ID_BYTES) < 0 ||
	    unhex(json_string_value(json_object_get(o, "tree")), s->tree,
	    CF_BK_ID_BYTES) < 0)
		goto out;
	if (json_object_get(o, "parent") != NULL) {
		if (unhex(json_string_value(json_object_get(o, "parent")),
		    s->parent, CF_BK_ID_BYTES) < 0)
			goto out;
		s->has_parent = 1;
	}
	if (json_object_get(o, "key_versions") != NULL) {
		rc = dec_key_versions(json_object_get(o, "key_versions"), s);
		if (rc < 0)
			goto out;
		rc = -EPROTO;
	}
	str = json_string_value(json_object_get(o, "hostname"));
	if (!str_ok(str, MAX_HOST))
		goto out;
	s->hostname = strdup(str);
	str = json_string_value(json_object_get(o, "consistency"));
	if (str == NULL || !consistency_ok(str))
		goto out;
	s->consistency = strdup(str);
	if (s->hostname == NULL || s->consistency == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	rc = dec_strs(json_object_get(o, "tags"), 0, MAX_TAGS, MAX_TAG,
	    &s->tags, &s->ntags);
	if (rc < 0)
		goto out;
	rc = dec_strs(json_object_get(o, "paths"), 1, MAX_PATHS, MAX_PATH,
	    &s->paths, &s->npaths);
	if (rc < 0)
		goto out;
	t = json_object_get(o, "stats");
	rc = keys_exact(t, stats_keys, sizeof(stats_keys) / sizeof(*stats_keys),
	    0);
	if (rc < 0)
		goto out;
	for (i = 0; i < sizeof(stats_keys) / sizeof(*stats_keys); i++) {
		rc = get_uint(t, stats_keys[i], stat_field(&s->stats, i));
		if (rc < 0)
			goto out;
	}
	*out = s;
	s = NULL;
	rc = 0;
out:
	cf_bk_snapshot_free(s);
	json_decref(o);
	return rc;
}

void
cf_bk_snapshot_free(struct cf_bk_snapshot *s)
{
	size_t i;

	if (s == NULL)
		return;
	for (i = 0; i < s->ntags; i++)
		free(s->tags[i]);
	for (i = 0; i < s->npaths; i++)
		free(s->paths[i]);
	free(s->tags);
	free(s->paths);
	free(s->hostname);
	free(s->consistency);
	free(s);
}

/* ---- config ------------------------------------------------------------------ */

int
bk_config_encode(const struct bk_config *c, char **out, size_t *len)
{
	json_t *o = json_object(), *ch = json_object(), *ck = NULL;
	char h[2 * CF_KS_KEY_BYTES + 1];
	int rc = -ENOMEM;

	*out = NULL;
	*len = 0;
	if (o == NULL || ch == NULL)
		goto out;
	if (set(ch, "min", json_integer((json_int_t)c->min)) ||
	    set(ch, "avg", json_integer((json_int_t)c->avg)) ||
	    set(ch, "max", json_integer((json_int_t)c->max)))
		goto out;
	if (set(o, "repo_id", hexval(c->repo_id, sizeof(c->repo_id))) ||
	    set(o, "tenant", hexval(c->tenant, sizeof(c->tenant))) ||
	    set(o, "created", json_integer(c->created)))
		goto out;
	if (c->chunk != NULL) {
		/* [BK-CFG-2] C and the version it derives from. */
		if (cf_secbuf_len(c->chunk) != CF_KS_KEY_BYTES ||
		    c->chunk_version == 0) {
			rc = -EINVAL;
			goto out;
		}
		sodium_bin2hex(h, sizeof(h), cf_secbuf_cdata(c->chunk),
		    CF_KS_KEY_BYTES);
		ck = json_string(h);
		sodium_memzero(h, sizeof(h));
		if (ck == NULL)
			goto out;
		/* The object holds a reference: wiped below. */
		if (json_object_set(o, "chunk_key", ck) != 0 ||
		    set(o, "chunk_version", json_integer(
		    (json_int_t)c->chunk_version)))
			goto out;
	}
	rc = set(o, "chunker", ch);
	ch = NULL;
	if (rc < 0)
		goto out;
	rc = dump(o, out, len);
out:
	if (ck != NULL) {
		/* jansson frees without wiping: wipe the hex first. */
		sodium_memzero((char *)(uintptr_t)json_string_value(ck),
		    2 * CF_KS_KEY_BYTES);
		json_decref(ck);
	}
	json_decref(ch);
	json_decref(o);
	return rc;
}

void
bk_config_text_free(char *s, size_t len)
{
	if (s == NULL)
		return;
	sodium_memzero(s, len);
	free(s);
}

void
bk_config_clear(struct bk_config *c)
{
	cf_secbuf_free(c->chunk);
	memset(c, 0, sizeof(*c));
}

/* [BK-CFG-2] "chunk_key" (64 lowercase hex) and "chunk_version". */
static int
dec_chunk(json_t *o, struct bk_config *c)
{
	json_t *ck = json_object_get(o, "chunk_key");
	json_t *cv = json_object_get(o, "chunk_version");
	const char *h;
	json_int_t v;
	int rc;

	if (ck == NULL && cv == NULL)
		return 0;
	if (!json_is_string(ck) || !json_is_integer(cv))
		return -EPROTO;
	v = json_integer_value(cv);
	if (v < 1 || v > (json_int_t)UINT32_MAX)
		return -EPROTO;
	rc = cf_secbuf_new(&c->chunk, CF_KS_KEY_BYTES);
	if (rc < 0)
		return rc;
	h = json_string_value(ck);
	rc = unhex(h, cf_secbuf_data(c->chunk), CF_KS_KEY_BYTES);
	/* jansson frees without wiping: wipe the hex in place. */
	sodium_memzero((char *)(uintptr_t)h, json_string_length(ck));
	if (rc < 0) {
		cf_secbuf_free(c->chunk);
		c->chunk = NULL;
		return rc;
	}
	cf_secbuf_readonly(c->chunk);
	c->chunk_version = (uint32_t)v;
	return 0;
}

int
bk_config_decode(struct bk_config *c, const char *buf, size_t len)
{
	static const char *const keys[] = {
		"chunker", "created", "repo_id", "tenant",
		"chunk_key", "chunk_version",
	};
	static const char *const ckeys[] = { "avg", "max", "min" };
	json_error_t e;
	json_t *o, *ch, *cr;
	uint64_t v[3];
	size_t i;
	int rc;

	memset(c, 0, sizeof(*c));
	o = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &e);
	if (o == NULL)
		return -EPROTO;
	/* The last two are optional ([BK-CFG-2]), together or not at all. */
	rc = keys_exact(o, keys, 6, 2);
	if (rc == 0)
		rc = dec_chunk(o, c);
	if (rc < 0)
		goto out;
	rc = -EPROTO;
	cr = json_object_get(o, "created");
	if (!json_is_integer(cr))
		goto out;
	c->created = json_integer_value(cr);
	if (unhex(json_string_value(json_object_get(o, "repo_id")),
	    c->repo_id, sizeof(c->repo_id)) < 0 ||
	    unhex(json_string_value(json_object_get(o, "tenant")), c->tenant,
	    sizeof(c->tenant)) < 0)
		goto out;
	ch = json_object_get(o, "chunker");
	rc = keys_exact(ch, ckeys, 3, 0);
	if (rc < 0)
		goto out;
	for (i = 0; i < 3; i++) {
		rc = get_uint(ch, ckeys[i], &v[i]);
		if (rc < 0)
			goto out;
	}
	rc = -EPROTO;
	c->avg = (size_t)v[0];
	c->max = (size_t)v[1];
	c->min = (size_t)v[2];
	if (v[0] > CF_BK_CHUNK_MAX || v[1] > CF_BK_CHUNK_MAX ||
	    !bk_chunker_params_ok(c->min, c->avg, c->max))
		goto out;
	rc = 0;
out:
	json_decref(o);
	if (rc < 0)
		bk_config_clear(c);
	return rc;
}
