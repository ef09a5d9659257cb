/*
 * ks_tenant.c - the tenant registry and the per-tenant key hierarchy.
 *
 * HOME/tenants/NAME/tenant.json holds what a tenant is (id, cipher, KMS,
 * repository, state); HOME/tenants/NAME/keys/vN.wk holds root key version
 * N wrapped by a KEK (docs/format/keystore.md).  A tenant directory is
 * built under a temporary name and renamed into place, so a crash during
 * creation never leaves a half tenant behind.  Root keys are only ever in
 * clear inside a struct cf_secbuf handed to the caller of unlock.
 *
 * Not here: what the keys encrypt (fs/, backup/), lifecycle schedules.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "ks_int.h"

#define TENANT_FORMAT 1
#define TENANT_JSON_MAX (256 * 1024)
#define MAX_VERSIONS 256

struct cf_ks_tenant {
	struct cf_ks_home *home;
	char name[CF_KS_NAME_MAX + 1];
	char dir[CF_KS_NAME_MAX + 16];		/* "tenants/NAME" */
	unsigned char id[CF_KS_ID_BYTES];
	char id_hex[CF_KS_ID_BYTES * 2 + 1];
	enum cf_ks_cipher cipher;
	char kms[CF_KS_NAME_MAX + 1];
	char subject[CF_KS_NAME_MAX + 16];	/* "tenant.NAME" */
	json_t *doc;				/* tenant.json, kept whole */
	uint32_t versions[MAX_VERSIONS];	/* sorted ascending */
	size_t nversions;
	/* Root keys lent by the tenant's daemon (cf_ks_tenant_lend). */
	struct cf_secbuf *lent[CF_KS_LENT_MAX];
	uint32_t lent_version[CF_KS_LENT_MAX];
	size_t nlent;
};

static int
audit_tenant(struct cf_ks_tenant *t, const char *event,
    const struct cf_ks_audit_field *extra, size_t nextra)
{
	struct cf_ks_audit_field f[8];
	size_t n = 0, i;

	f[n++] = (struct cf_ks_audit_field){ "tenant", t->name, 0 };
	f[n++] = (struct cf_ks_audit_field){ "tenant_id", t->id_hex, 0 };
	for (i = 0; i < nextra && n < 8; i++)
		f[n++] = extra[i];
	return cf_ks_audit_append(t->home, event, f, n);
}

static int
version_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* Scans keys/ for vN.wk files. */
static int
scan_versions(struct cf_ks_tenant *t)
{
	char path[PATH_MAX];
	struct dirent *de;
	DIR *d;
	int fd;

	t->nversions = 0;
	snprintf(path, sizeof(path), "%s/keys", t->dir);
	fd = ks_openat(t->home->dirfd, path, O_RDONLY | O_DIRECTORY, 0);
	if (fd < 0)
		return fd == -ENOENT ? 0 : fd;
	d = fdopendir(fd);
	if (d == NULL) {
		close(fd);
		return -errno;
	}
	while ((de = readdir(d)) != NULL) {
		unsigned long v;
		char *end;

		if (de->d_name[0] != 'v')
			continue;
		char canon[32];

		errno = 0;
		v = strtoul(de->d_name + 1, &end, 10);
		if (errno != 0 || v == 0 || v > UINT32_MAX ||
		    strcmp(end, ".wk") != 0)
			continue;
		/* Only the canonical spelling: "v01.wk" is not version 1. */
		snprintf(canon, sizeof(canon), "v%lu.wk", v);
		if (strcmp(canon, de->d_name) != 0)
			continue;
		/* A wrapped key beyond key_version is a rotation that never
		 * committed; a retired one is being shredded. */
		if (v > cf_ks_tenant_key_version(t) ||
		    cf_ks_tenant_retired(t, (uint32_t)v))
			continue;
		if (t->nversions == MAX_VERSIONS) {
			closedir(d);
			return ks_err(-E2BIG, "tenant '%s' has more than %d key "
			    "versions", t->name, MAX_VERSIONS);
		}
		t->versions[t->nversions++] = (uint32_t)v;
	}
	closedir(d);
	qsort(t->versions, t->nversions, sizeof(t->versions[0]), version_cmp);
	return 0;
}

static struct cf_ks_tenant *
tenant_alloc(struct cf_ks_home *home, const char *name)
{
	struct cf_ks_tenant *t = calloc(1, sizeof(*t));

	if (t == NULL)
		return NULL;
	t->home = home;
	snprintf(t->name, sizeof(t->name), "%s", name);
	snprintf(t->dir, sizeof(t->dir), "tenants/%s", name);
	snprintf(t->subject, sizeof(t->subject), "tenant.%s", name);
	return t;
}

void
cf_ks_tenant_free(struct cf_ks_tenant *t)
{
	size_t i;

	if (t == NULL)
		return;
	for (i = 0; i < t->nlent; i++)
		cf_secbuf_free(t->lent[i]);
	json_decref(t->doc);
	free(t);
}

/* Validates tenant.json and fills the cached fields. */
static int
load_doc(struct cf_ks_tenant *t, json_t *doc)
{
	const char *name, *id, *cipher, *kms;
	json_t *fmt, *kv;

	fmt = json_object_get(doc, "format");
	name = json_string_value(json_object_get(doc, "name"));
	id = json_string_value(json_object_get(doc, "id"));
	cipher = json_string_value(json_object_get(doc, "cipher"));
	kms = json_string_value(json_object_get(doc, "kms"));
	kv = json_object_get(doc, "key_version");
	if (!json_is_integer(fmt) || json_integer_value(fmt) != TENANT_FORMAT)
		return ks_err(-EPROTO, "tenant '%s': unknown tenant.json "
		    "format", t->name);
	if (name == NULL || strcmp(name, t->name) != 0 || id == NULL ||
	    ks_unhex(t->id, CF_KS_ID_BYTES, id) < 0 || cipher == NULL ||
	    kms == NULL || !cf_ks_name_valid(kms) || !json_is_integer(kv) ||
	    json_integer_value(kv) < 1 ||
	    json_integer_value(kv) > (json_int_t)UINT32_MAX)
		return ks_err(-EPROTO, "tenant '%s': tenant.json is damaged "
		    "(missing or invalid name, id, cipher, kms or "
		    "key_version)", t->name);
	if (cf_ks_cipher_parse(cipher, &t->cipher) < 0)
		return ks_err(-EPROTO, "tenant '%s': unknown cipher in "
		    "tenant.json", t->name);
	ks_hex(t->id_hex, t->id, CF_KS_ID_BYTES);
	snprintf(t->kms, sizeof(t->kms), "%s", kms);
	json_decref(t->doc);
	t->doc = json_incref(doc);
	return 0;
}

/*
 * Rereads tenant.json before a change: another process (a rotation while
 * the tenant is mounted, a setting written by a command meanwhile) may
 * have changed it since t was opened, and saving the stale copy would
 * undo that, e.g. move key_version back.
 */
static int
reload_doc(struct cf_ks_tenant *t)
{
	char path[PATH_MAX];
	json_t *doc = NULL;
	int rc;

	snprintf(path, sizeof(path), "%s/tenant.json", t->dir);
	rc = ks_json_load(t->home->dirfd, path, TENANT_JSON_MAX, &doc);
	if (rc < 0)
		return ks_err(rc, "tenant '%s': cannot read tenant.json: %s",
		    t->name, strerror(-rc));
	if (!json_is_string(json_object_get(doc, "id")) ||
	    strcmp(json_string_value(json_object_get(doc, "id")),
	    t->id_hex) != 0) {
		json_decref(doc);
		return ks_err(-EPROTO, "tenant '%s': tenant.json was replaced "
		    "by another tenant's", t->name);
	}
	rc = load_doc(t, doc);
	json_decref(doc);
	if (rc == 0)
		rc = scan_versions(t);
	return rc;
}

static int
save_doc(struct cf_ks_tenant *t)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/tenant.json", t->dir);
	return ks_json_save(t->home->dirfd, path, t->doc, 0600);
}

/* Wraps root under the tenant's KMS and writes keys/vN.wk atomically. */
static int
write_wrapped(struct cf_ks_tenant *t, const char *dir, struct ks_kms *kms,
    uint32_t version, const struct cf_secbuf *root)
{
	struct cf_ks_envelope env;
	unsigned char buf[KS_WK_FIXED + CF_KS_ENVELOPE_BLOB_MAX];
	char path[PATH_MAX];
	size_t len;
	int rc;

	memset(&env, 0, sizeof(env));
	env.key_version = version;
	memcpy(env.tenant_id, t->id, CF_KS_ID_BYTES);
	rc = kms->ops->current(kms, env.kek_id, &env.alg);
	if (rc < 0)
		goto out;
	/* The header, which names tenant, version and KEK, is the AAD. */
	cf_ks_envelope_header(&env);
	rc = kms->ops->wrap(kms, env.kek_id, env.alg, env.header,
	    sizeof(env.header), root, env.blob, &env.blob_len);
	if (rc < 0)
		goto out;
	rc = cf_ks_envelope_encode(&env, buf, sizeof(buf), &len);
	if (rc < 0)
		goto out;
	snprintf(path, sizeof(path), "%s/keys/v%u.wk", dir, version);
	rc = ks_write_file_atomic(t->home->dirfd, path, buf, len, 0600);
	if (rc < 0)
		ks_err(rc, "cannot write %s: %s", path, strerror(-rc));
out:
	sodium_memzero(&env, sizeof(env));
	return rc;
}

int
cf_ks_tenant_create(struct cf_ks_home *home, const char *name,
    enum cf_ks_cipher cipher, const char *kms_name, const char *repo,
    struct cf_ks_tenant **out)
{
	struct cf_ks_tenant *t = NULL;
	struct cf_secbuf *root = NULL;
	struct ks_kms *kms;
	char tmpdir[64], path[PATH_MAX], created[32];
	unsigned char rnd[8];
	char rhex[17];
	json_t *doc = NULL;
	int rc, made_tmp = 0;

	*out = NULL;
	if (!cf_ks_name_valid(name))
		return ks_err(-EINVAL, "invalid tenant name '%.64s': use 1-63 "
		    "of a-z 0-9 . _ - starting with a letter or digit", name);
	if (kms_name == NULL)
		kms_name = "local";
	if (cipher == CF_KS_CIPHER_NONE)
		cipher = cf_ks_cipher_default();
	if (!cf_ks_cipher_available(cipher))
		return ks_err(-ENOTSUP, "cipher %s needs AES-NI, which this "
		    "CPU lacks; use xchacha20-poly1305",
		    cf_ks_cipher_name(cipher));
	if (repo != NULL && strlen(repo) > 4096)
		return ks_err(-EINVAL, "repository URL is too long");
	t = tenant_alloc(home, name);
	if (t == NULL)
		return -ENOMEM;
	snprintf(path, sizeof(path), "%s/tenant.json", t->dir);
	if (faccessat(home->dirfd, t->dir, F_OK, AT_SYMLINK_NOFOLLOW) == 0) {
		rc = ks_err(-EEXIST, "tenant '%s' already exists", name);
		goto out;
	}
	rc = ks_kms_get(home, kms_name, &kms);
	if (rc < 0)
		goto out;
	randombytes_buf(t->id, CF_KS_ID_BYTES);
	ks_hex(t->id_hex, t->id, CF_KS_ID_BYTES);
	t->cipher = cipher;
	snprintf(t->kms, sizeof(t->kms), "%s", kms_name);
	randombytes_buf(rnd, sizeof(rnd));
	ks_hex(rhex, rnd, sizeof(rnd));
	snprintf(tmpdir, sizeof(tmpdir), "tenants/.new-%s", rhex);
	snprintf(path, sizeof(path), "%s/keys", tmpdir);
	rc = ks_mkdirs(home->dirfd, path, 0700);
	if (rc < 0)
		goto out;
	made_tmp = 1;
	rc = cf_secbuf_random(&root, CF_KS_KEY_BYTES);
	if (rc < 0)
		goto out;
	rc = write_wrapped(t, tmpdir, kms, 1, root);
	if (rc < 0)
		goto out;
	cf_ks_time_format(cf_ks_now(), created, sizeof(created));
	doc = json_pack("{s:i, s:s, s:s, s:s, s:s, s:s?, s:s, s:i, s:s}",
	    "format", TENANT_FORMAT, "name", name, "id", t->id_hex,
	    "cipher", cf_ks_cipher_name(cipher), "kms", kms_name,
	    "repo", repo, "created", created, "key_version", 1,
	    "state", "active");
	if (doc == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	if (repo == NULL)
		json_object_del(doc, "repo");
	snprintf(path, sizeof(path), "%s/tenant.json", tmpdir);
	rc = ks_json_save(home->dirfd, path, doc, 0600);
	if (rc < 0)
		goto out;
	/* The commit point: rename fails if another create won the race. */
	if (renameat(home->dirfd, tmpdir, home->dirfd, t->dir) != 0) {
		rc = -errno;
		if (rc == -ENOTEMPTY || rc == -EEXIST)
			rc = ks_err(-EEXIST, "tenant '%s' already exists",
			    name);
		goto out;
	}
	made_tmp = 0;
	rc = ks_fsync_parent(home->dirfd, t->dir);
	if (rc < 0)
		goto out;
	rc = load_doc(t, doc);
	if (rc < 0)
		goto out;
	rc = scan_versions(t);
	if (rc < 0)
		goto out;
	{
		char kek[160];
		struct cf_ks_audit_field f[] = {
			{ "cipher", cf_ks_cipher_name(cipher), 0 },
			{ "kms", kms_name, 0 },
			{ "key_version", NULL, 1 },
			{ "kek", kek, 0 },
		};

		rc = cf_ks_tenant_describe_kek(t, 1, kek, sizeof(kek));
		if (rc < 0)
			goto out;
		rc = audit_tenant(t, "tenant.create", f, 4);
		if (rc < 0)
			goto out;
	}
	*out = t;
	t = NULL;
	rc = 0;
out:
	if (made_tmp) {
		char p2[PATH_MAX];

		snprintf(p2, sizeof(p2), "%s/keys/v1.wk", tmpdir);
		unlinkat(home->dirfd, p2, 0);
		snprintf(p2, sizeof(p2), "%s/tenant.json", tmpdir);
		unlinkat(home->dirfd, p2, 0);
		snprintf(p2, sizeof(p2), "%s/keys", tmpdir);
		unlinkat(home->dirfd, p2, AT_REMOVEDIR);
		unlinkat(home->dirfd, tmpdir, AT_REMOVEDIR);
	}
	json_decref(doc);
	cf_secbuf_free(root);
	cf_ks_tenant_free(t);
	return rc;
}

int
cf_ks_tenant_open(struct cf_ks_home *home, const char *name,
    struct cf_ks_tenant **out)
{
	struct cf_ks_tenant *t = NULL;
	char path[PATH_MAX];
	json_t *doc = NULL;
	int rc;

	*out = NULL;
	if (!cf_ks_name_valid(name))
		return ks_err(-EINVAL, "invalid tenant name '%.64s'", name);
	t = tenant_alloc(home, name);
	if (t == NULL)
		return -ENOMEM;
	snprintf(path, sizeof(path), "%s/tenant.json", t->dir);
	rc = ks_json_load(home->dirfd, path, TENANT_JSON_MAX, &doc);
	if (rc == -ENOENT) {
		rc = ks_err(-ENOENT, "no tenant '%s' (see 'coffer tenant "
		    "list')", name);
		goto out;
	}
	if (rc < 0)
		goto out;
	rc = load_doc(t, doc);
	if (rc < 0)
		goto out;
	rc = scan_versions(t);
	if (rc < 0)
		goto out;
	*out = t;
	t = NULL;
out:
	json_decref(doc);
	cf_ks_tenant_free(t);
	return rc;
}

static int
name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int
cf_ks_tenant_list(struct cf_ks_home *home, char ***names, size_t *count)
{
	char **v = NULL, **nv;
	size_t n = 0, cap = 0;
	struct dirent *de;
	char path[PATH_MAX];
	DIR *d;
	int fd, rc = 0;

	*names = NULL;
	*count = 0;
	fd = ks_openat(home->dirfd, "tenants", O_RDONLY | O_DIRECTORY, 0);
	if (fd < 0)
		return fd == -ENOENT ? 0 : fd;
	d = fdopendir(fd);
	if (d == NULL) {
		close(fd);
		return -errno;
	}
	while ((de = readdir(d)) != NULL) {
		if (!cf_ks_name_valid(de->d_name))
			continue;	/* ".", "..", ".new-*" leftovers */
		snprintf(path, sizeof(path), "tenants/%s/tenant.json",
		    de->d_name);
		if (faccessat(home->dirfd, path, F_OK, AT_SYMLINK_NOFOLLOW))
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			nv = realloc(v, cap * sizeof(*v));
			if (nv == NULL) {
				rc = -ENOMEM;
				goto out;
			}
			v = nv;
		}
		v[n] = strdup(de->d_name);
		if (v[n] == NULL) {
			rc = -ENOMEM;
			goto out;
		}
		n++;
	}
	qsort(v, n, sizeof(*v), name_cmp);
	*names = v;
	*count = n;
	v = NULL;
out:
	closedir(d);
	if (v != NULL)
		cf_ks_tenant_list_free(v, n);
	return rc;
}

void
cf_ks_tenant_list_free(char **names, size_t count)
{
	size_t i;

	for (i = 0; i < count; i++)
		free(names[i]);
	free(names);
}

const char *
cf_ks_tenant_name(const struct cf_ks_tenant *t)
{
	return t->name;
}

const unsigned char *
cf_ks_tenant_id(const struct cf_ks_tenant *t)
{
	return t->id;
}

const char *
cf_ks_tenant_id_hex(const struct cf_ks_tenant *t)
{
	return t->id_hex;
}

enum cf_ks_cipher
cf_ks_tenant_cipher(const struct cf_ks_tenant *t)
{
	return t->cipher;
}

const char *
cf_ks_tenant_kms(const struct cf_ks_tenant *t)
{
	return t->kms;
}

const char *
cf_ks_tenant_repo(const struct cf_ks_tenant *t)
{
	return json_string_value(json_object_get(t->doc, "repo"));
}

time_t
cf_ks_tenant_created(const struct cf_ks_tenant *t)
{
	const char *s = json_string_value(json_object_get(t->doc, "created"));
	time_t v = 0;

	if (s == NULL || cf_ks_time_parse(s, &v) < 0)
		return 0;
	return v;
}

uint32_t
cf_ks_tenant_key_version(const struct cf_ks_tenant *t)
{
	return (uint32_t)json_integer_value(json_object_get(t->doc,
	    "key_version"));
}

int
cf_ks_tenant_shredded(const struct cf_ks_tenant *t)
{
	return json_is_true(json_object_get(t->doc, "shredded"));
}

const char *
cf_ks_tenant_dir(const struct cf_ks_tenant *t)
{
	return t->dir;
}

const char *
cf_ks_tenant_get(const struct cf_ks_tenant *t, const char *key)
{
	return json_string_value(json_object_get(t->doc, key));
}

/* Checks one setting for cf_ks_tenant_set_many. */
static int
check_setting(const struct cf_ks_tenant *t, const char *key,
    const char *value)
{
	static const char *const reserved[] = { "format", "name", "id",
		"cipher", "kms", "kms_next", "key_version", "retired_versions",
		"shredded", "created" };
	size_t i, len;

	for (i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++)
		if (strcmp(key, reserved[i]) == 0)
			cf_misuse("cf_ks_tenant_set: reserved key");
	len = strlen(key);
	if (len == 0)
		return ks_err(-EINVAL, "tenant '%s': empty setting name",
		    t->name);
	if (len > CF_KS_TENANT_KEY_MAX)
		return ks_err(-E2BIG, "tenant '%s': setting name longer than "
		    "%u bytes", t->name, CF_KS_TENANT_KEY_MAX);
	if (value != NULL && strlen(value) > CF_KS_TENANT_VALUE_MAX)
		return ks_err(-E2BIG, "tenant '%s': value of '%s' longer than "
		    "%u bytes", t->name, key, CF_KS_TENANT_VALUE_MAX);
	return 0;
}

int
cf_ks_tenant_set(struct cf_ks_tenant *t, const char *key, const char *value)
{
	const char *kv[2] = { key, value };

	return cf_ks_tenant_set_many(t, kv, 1);
}

int
cf_ks_tenant_set_many(struct cf_ks_tenant *t, const char *const *kv,
    size_t n)
{
	char path[PATH_MAX];
	json_t *copy = NULL;
	char *text = NULL;
	size_t i;
	int rc;

	for (i = 0; i < n; i++) {
		rc = check_setting(t, kv[2 * i], kv[2 * i + 1]);
		if (rc < 0)
			return rc;
	}
	rc = reload_doc(t);
	if (rc < 0)
		return rc;
	copy = json_deep_copy(t->doc);
	if (copy == NULL)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		if (kv[2 * i + 1] == NULL) {
			json_object_del(copy, kv[2 * i]);
		} else if (json_object_set_new(copy, kv[2 * i],
		    json_string(kv[2 * i + 1])) != 0) {
			rc = ks_err(-EINVAL, "tenant '%s': value of '%s' is "
			    "not valid UTF-8", t->name, kv[2 * i]);
			goto out;
		}
	}
	/*
	 * Many settings of the maximum size could still outgrow the limit
	 * that tenant open enforces: refuse rather than write a file that
	 * can no longer be read.
	 */
	text = json_dumps(copy, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	if (text == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	if (strlen(text) + 1 > TENANT_JSON_MAX) {
		rc = ks_err(-E2BIG, "tenant '%s': tenant.json would exceed "
		    "%d bytes", t->name, TENANT_JSON_MAX);
		goto out;
	}
	/* Save first: memory changes only once the disk holds the change. */
	snprintf(path, sizeof(path), "%s/tenant.json", t->dir);
	rc = ks_json_save(t->home->dirfd, path, copy, 0600);
	if (rc < 0) {
		rc = ks_err(rc, "tenant '%s': cannot save tenant.json: %s",
		    t->name, strerror(-rc));
		goto out;
	}
	json_decref(t->doc);
	t->doc = copy;
	copy = NULL;
	rc = 0;
out:
	free(text);
	json_decref(copy);
	return rc;
}

size_t
cf_ks_tenant_versions(const struct cf_ks_tenant *t, uint32_t *out, size_t cap)
{
	size_t i;

	for (i = 0; i < t->nversions && i < cap; i++)
		out[i] = t->versions[i];
	return t->nversions;
}

/* Reads and decodes keys/vN.wk and checks it belongs to this tenant. */
static int
read_envelope(struct cf_ks_tenant *t, uint32_t version,
    struct cf_ks_envelope *env)
{
	unsigned char *buf = NULL;
	char path[PATH_MAX];
	size_t len;
	int rc;

	snprintf(path, sizeof(path), "%s/keys/v%u.wk", t->dir, version);
	rc = ks_read_file(t->home->dirfd, path, KS_WK_FIXED +
	    CF_KS_ENVELOPE_BLOB_MAX, &buf, &len);
	if (rc == -ENOENT || cf_ks_tenant_retired(t, version))
		return ks_err(-ENOENT, "tenant '%s' has no key version %u%s",
		    t->name, version, cf_ks_tenant_shredded(t) ?
		    " (its keys were crypto-shredded)" :
		    cf_ks_tenant_retired(t, version) ? " (it was retired "
		    "and shredded)" : "");
	if (rc == -EFBIG)
		return ks_err(-EPROTO, "tenant '%s': %s is too large to be a "
		    "wrapped key", t->name, path);
	if (rc < 0)
		return ks_err(rc, "cannot read %s: %s", path, strerror(-rc));
	rc = cf_ks_envelope_decode(env, buf, len);
	free(buf);
	if (rc < 0)
		return ks_err(rc, "tenant '%s', key version %u: %s", t->name,
		    version, cf_ks_last_error());
	if (sodium_memcmp(env->tenant_id, t->id, CF_KS_ID_BYTES) != 0 ||
	    env->key_version != version)
		return ks_err(-EBADMSG, "tenant '%s': %s belongs to another "
		    "tenant or key version (file swapped)", t->name, path);
	return 0;
}

static uint32_t
resolve_version(const struct cf_ks_tenant *t, uint32_t version)
{
	return version == 0 ? cf_ks_tenant_key_version(t) : version;
}

/*
 * Unwraps env through the tenant's KMS.  While a move to another provider
 * is in progress ("kms_next" in tenant.json, see move_kms), a version may
 * already be wrapped by the new provider: a provider that does not know
 * the envelope's algorithm or KEK (-EPROTO, -ENOENT) hands over to the
 * other one.  *used names the provider that succeeded (or failed last).
 */
static int
unwrap_any(struct cf_ks_tenant *t, const struct cf_ks_envelope *env,
    struct ks_kms **used, struct cf_secbuf **k)
{
	const char *next = cf_ks_tenant_get(t, "kms_next");
	struct ks_kms *kms;
	int rc;

	*used = NULL;
	rc = ks_kms_get(t->home, t->kms, &kms);
	if (rc < 0)
		return rc;
	*used = kms;
	rc = kms->ops->unwrap(kms, env->kek_id, env->alg, env->header,
	    sizeof(env->header), env->blob, env->blob_len, k);
	if ((rc != -EPROTO && rc != -ENOENT) || next == NULL ||
	    !cf_ks_name_valid(next) || strcmp(next, t->kms) == 0)
		return rc;
	rc = ks_kms_get(t->home, next, &kms);
	if (rc < 0)
		return rc;
	*used = kms;
	return kms->ops->unwrap(kms, env->kek_id, env->alg, env->header,
	    sizeof(env->header), env->blob, env->blob_len, k);
}

int
cf_ks_tenant_lend(struct cf_ks_tenant *t, uint32_t version,
    const unsigned char key[CF_KS_KEY_BYTES])
{
	struct cf_secbuf *k;
	size_t i;
	int rc;

	if (version == 0)
		return -EINVAL;
	for (i = 0; i < t->nlent; i++)
		if (t->lent_version[i] == version)
			return -EEXIST;
	if (t->nlent == CF_KS_LENT_MAX)
		return -E2BIG;
	rc = cf_secbuf_new(&k, CF_KS_KEY_BYTES);
	if (rc < 0)
		return rc;
	memcpy(cf_secbuf_data(k), key, CF_KS_KEY_BYTES);
	cf_secbuf_readonly(k);
	t->lent[t->nlent] = k;
	t->lent_version[t->nlent++] = version;
	return 0;
}

size_t
cf_ks_tenant_lent(const struct cf_ks_tenant *t)
{
	return t->nlent;
}

/* A copy of the key lent for version into *root; -ENOENT if none was. */
static int
lent_copy(const struct cf_ks_tenant *t, uint32_t version,
    struct cf_secbuf **root)
{
	size_t i;
	int rc;

	for (i = 0; i < t->nlent; i++) {
		if (t->lent_version[i] != version)
			continue;
		rc = cf_secbuf_new(root, CF_KS_KEY_BYTES);
		if (rc < 0)
			return rc;
		memcpy(cf_secbuf_data(*root), cf_secbuf_cdata(t->lent[i]),
		    CF_KS_KEY_BYTES);
		return 0;
	}
	return -ENOENT;
}

int
cf_ks_tenant_unlock(struct cf_ks_tenant *t, uint32_t version,
    struct cf_secbuf **root)
{
	struct cf_ks_envelope env;
	struct cf_secbuf *k = NULL;
	struct ks_kms *kms;
	char kek[160];
	int rc;

	*root = NULL;
	version = resolve_version(t, version);
	if (cf_ks_tenant_shredded(t))
		return ks_err(-EACCES, "tenant '%s' was crypto-shredded; its "
		    "keys no longer exist", t->name);
	/* Lent: the daemon's unlock was checked, counted and audited. */
	rc = lent_copy(t, version, root);
	if (rc != -ENOENT)
		return rc;
	rc = ks_lockout_attempt(t->home, t->subject);
	if (rc < 0)
		return rc;
	rc = read_envelope(t, version, &env);
	if (rc < 0)
		goto fail;
	rc = unwrap_any(t, &env, &kms, &k);
	if (rc == -EACCES || rc == -ENOENT) {
		/* KMS refused (counted there) or KEK gone: not this
		 * tenant's failure. */
		(void)!ks_lockout_reset(t->home, t->subject);
		goto out;
	}
	if (rc < 0)
		goto fail;
	rc = ks_lockout_reset(t->home, t->subject);
	if (rc < 0)
		goto out;
	kms->ops->describe(kms, env.kek_id, kek, sizeof(kek));
	{
		struct cf_ks_audit_field f[] = {
			{ "kms", kms->name, 0 },
			{ "key_version", NULL, version },
			{ "kek", kek, 0 },
		};

		rc = audit_tenant(t, "key.unwrap", f, 3);
		if (rc < 0)
			goto out;
	}
	*root = k;
	k = NULL;
	rc = 0;
	goto out;
fail:
	/* An envelope that fails to decode or authenticate counts against
	 * the tenant: three in a row lock it (seed 003). */
	if (rc == -EBADMSG || rc == -EPROTO) {
		char msg[512];
		struct cf_ks_audit_field f[] = {
			{ "key_version", NULL, version },
			{ "reason", rc == -EBADMSG ? "authentication" :
			    "malformed", 0 },
		};

		snprintf(msg, sizeof(msg), "%s", cf_ks_last_error());
		(void)!audit_tenant(t, "key.unwrap_failed", f, 2);
		(void)ks_lockout_fail(t->home, t->subject);
		ks_err(rc, "%s", msg);
	} else {
		(void)!ks_lockout_reset(t->home, t->subject);
	}
out:
	sodium_memzero(&env, sizeof(env));
	cf_secbuf_free(k);
	return rc;
}

int
cf_ks_tenant_describe_kek(struct cf_ks_tenant *t, uint32_t version, char *buf,
    size_t len)
{
	struct cf_ks_envelope env;
	struct ks_kms *kms;
	int rc;

	if (len > 0)
		buf[0] = '\0';
	rc = read_envelope(t, resolve_version(t, version), &env);
	if (rc < 0)
		return rc;
	rc = ks_kms_get(t->home, t->kms, &kms);
	if (rc < 0)
		return rc;
	return kms->ops->describe(kms, env.kek_id, buf, len);
}

/*
 * Test builds only: COFFER_TEST_KILL_AT=STEP kills the process with
 * SIGKILL at a step of a KMS move, so tests can check that a crash leaves
 * the tenant usable.  Steps: 1 after "kms_next" is recorded, 2 after the
 * first version is rewrapped, 3 after every version is rewrapped; 11 in a
 * root key rotation after the new wrapped key is written, before
 * tenant.json commits it; 12 in a retirement after tenant.json records
 * it, before the wrapped key is shredded.
 */
static void
crash_point(int step)
{
#ifdef CF_TEST_CLOCK
	const char *v = getenv("COFFER_TEST_KILL_AT");

	if (v != NULL && strtol(v, NULL, 10) == step)
		raise(SIGKILL);
#else
	(void)step;
#endif
}

/* Saves tenant.json with "kms" and "kms_next" set (NULL deletes). */
static int
set_kms_fields(struct cf_ks_tenant *t, const char *kms, const char *next)
{
	json_t *copy;
	int rc;

	copy = json_deep_copy(t->doc);
	if (copy == NULL)
		return -ENOMEM;
	if (json_object_set_new(copy, "kms", json_string(kms)) != 0 ||
	    (next != NULL && json_object_set_new(copy, "kms_next",
	    json_string(next)) != 0)) {
		json_decref(copy);
		return -ENOMEM;
	}
	if (next == NULL)
		json_object_del(copy, "kms_next");
	json_decref(t->doc);
	t->doc = copy;
	rc = save_doc(t);
	if (rc < 0)
		return ks_err(rc, "tenant '%s': cannot save tenant.json: %s",
		    t->name, strerror(-rc));
	snprintf(t->kms, sizeof(t->kms), "%s", kms);
	return 0;
}

/*
 * Moves the tenant's wrapped root keys to another provider.  Two-phase:
 * tenant.json first names the destination as "kms_next" (unlock then
 * accepts either provider), each keys/vN.wk is replaced atomically under
 * the destination, and only then does "kms" change and "kms_next" go.
 * A crash at any point leaves every version readable through one of the
 * two providers named in tenant.json; a rerun finishes the move.
 */
static int
move_kms(struct cf_ks_tenant *t, const char *to_kms)
{
	struct cf_secbuf *roots[MAX_VERSIONS] = { NULL };
	struct ks_kms *dst;
	char from[CF_KS_NAME_MAX + 1], to[CF_KS_NAME_MAX + 1], newkek[160];
	size_t i;
	int rc;

	/* to_kms may point into t->doc, which set_kms_fields replaces. */
	if (!cf_ks_name_valid(to_kms))
		return ks_err(-EINVAL, "invalid KMS name");
	snprintf(to, sizeof(to), "%s", to_kms);
	to_kms = to;
	if (cf_ks_tenant_shredded(t))
		return ks_err(-EACCES, "tenant '%s' was crypto-shredded",
		    t->name);
	if (t->nversions == 0)
		return ks_err(-ENOENT, "tenant '%s' has no wrapped keys",
		    t->name);
	snprintf(from, sizeof(from), "%s", t->kms);
	rc = ks_kms_get(t->home, to_kms, &dst);
	if (rc < 0)
		return rc;
	for (i = 0; i < t->nversions; i++) {
		rc = cf_ks_tenant_unlock(t, t->versions[i], &roots[i]);
		if (rc < 0)
			goto out;
	}
	if (strcmp(from, to_kms) != 0) {
		rc = set_kms_fields(t, from, to_kms);
		if (rc < 0)
			goto out;
	}
	crash_point(1);
	for (i = 0; i < t->nversions; i++) {
		rc = write_wrapped(t, t->dir, dst, t->versions[i], roots[i]);
		if (rc < 0)
			goto out;
		if (i == 0)
			crash_point(2);
	}
	crash_point(3);
	rc = set_kms_fields(t, to_kms, NULL);
	if (rc < 0)
		goto out;
	rc = cf_ks_tenant_describe_kek(t, 0, newkek, sizeof(newkek));
	if (rc < 0)
		goto out;
	{
		struct cf_ks_audit_field f[] = {
			{ "kms", to_kms, 0 },
			{ "from_kms", from, 0 },
			{ "new_kek", newkek, 0 },
			{ "versions", NULL, (long long)t->nversions },
		};

		rc = audit_tenant(t, "tenant.rotate_kek", f, 4);
	}
out:
	for (i = 0; i < t->nversions; i++)
		cf_secbuf_free(roots[i]);
	return rc;
}

int
cf_ks_tenant_rotate_kek(struct cf_ks_tenant *t, const char *to_kms)
{
	struct cf_secbuf *roots[MAX_VERSIONS] = { NULL };
	struct cf_ks_envelope env;
	struct ks_kms *kms;
	char oldkek[160], newkek[160];
	const char *next;
	size_t i;
	int rc;

	rc = reload_doc(t);
	if (rc < 0)
		return rc;
	next = cf_ks_tenant_get(t, "kms_next");
	if (next != NULL && to_kms == NULL)
		to_kms = next;	/* finish an interrupted move */
	if (next != NULL && strcmp(to_kms, next) != 0 &&
	    strcmp(to_kms, t->kms) != 0)
		return ks_err(-EBUSY, "tenant '%s' is part-way through a move "
		    "from KMS '%s' to '%s': finish it first with 'coffer "
		    "tenant rotate-kek %s --to %s'", t->name, t->kms, next,
		    t->name, next);
	if (to_kms != NULL && (strcmp(to_kms, t->kms) != 0 || next != NULL))
		return move_kms(t, to_kms);
	if (cf_ks_tenant_shredded(t))
		return ks_err(-EACCES, "tenant '%s' was crypto-shredded",
		    t->name);
	if (t->nversions == 0)
		return ks_err(-ENOENT, "tenant '%s' has no wrapped keys",
		    t->name);
	rc = ks_kms_get(t->home, t->kms, &kms);
	if (rc < 0)
		return rc;
	/* Unwrap every version first: rotation must not strand one. */
	for (i = 0; i < t->nversions; i++) {
		rc = cf_ks_tenant_unlock(t, t->versions[i], &roots[i]);
		if (rc < 0)
			goto out;
	}
	rc = cf_ks_tenant_describe_kek(t, 0, oldkek, sizeof(oldkek));
	if (rc < 0)
		goto out;
	rc = read_envelope(t, cf_ks_tenant_key_version(t), &env);
	if (rc < 0)
		goto out;
	{
		unsigned char cur[CF_KS_ID_BYTES];
		uint8_t alg;

		rc = kms->ops->current(kms, cur, &alg);
		if (rc < 0)
			goto out;
		/* Already on the newest KEK: make a newer one. */
		if (sodium_memcmp(cur, env.kek_id, CF_KS_ID_BYTES) == 0) {
			rc = kms->ops->rotate(kms);
			if (rc < 0)
				goto out;
		}
	}
	/*
	 * Each file is replaced atomically and the old KEK still exists, so
	 * a crash part-way leaves every version readable, some under the
	 * old KEK and some under the new; a rerun finishes the job.
	 */
	for (i = 0; i < t->nversions; i++) {
		rc = write_wrapped(t, t->dir, kms, t->versions[i], roots[i]);
		if (rc < 0)
			goto out;
	}
	rc = cf_ks_tenant_describe_kek(t, 0, newkek, sizeof(newkek));
	if (rc < 0)
		goto out;
	{
		struct cf_ks_audit_field f[] = {
			{ "kms", t->kms, 0 },
			{ "old_kek", oldkek, 0 },
			{ "new_kek", newkek, 0 },
			{ "versions", NULL, (long long)t->nversions },
		};

		rc = audit_tenant(t, "tenant.rotate_kek", f, 4);
	}
out:
	sodium_memzero(&env, sizeof(env));
	for (i = 0; i < t->nversions; i++)
		cf_secbuf_free(roots[i]);
	return rc;
}

/* Shreds every regular file in the tenant's keys/ directory. */
static int
shred_all(struct cf_ks_tenant *t, size_t *count)
{
	char dir[128], path[PATH_MAX];
	struct dirent *de;
	DIR *d;
	int fd, rc = 0;

	*count = 0;
	snprintf(dir, sizeof(dir), "%s/keys", t->dir);
	fd = openat(t->home->dirfd, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC |
	    O_NOFOLLOW);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	d = fdopendir(fd);
	if (d == NULL) {
		close(fd);
		return -errno;
	}
	while ((de = readdir(d)) != NULL) {
		if (de->d_type != DT_REG && de->d_type != DT_UNKNOWN)
			continue;
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		rc = ks_shred_file(t->home->dirfd, path);
		if (rc < 0 && rc != -ENOENT) {
			ks_err(rc, "tenant '%s': cannot destroy %s: %s",
			    t->name, path, strerror(-rc));
			break;
		}
		rc = 0;
		(*count)++;
	}
	closedir(d);
	return rc;
}

int
cf_ks_tenant_shred(struct cf_ks_tenant *t)
{
	char when[32];
	json_t *copy;
	size_t n;
	int rc;

	/*
	 * Mark first: a crash after this point leaves a tenant that refuses
	 * to unlock and whose remaining key files a rerun destroys.
	 */
	rc = reload_doc(t);
	if (rc < 0)
		return rc;
	if (!cf_ks_tenant_shredded(t)) {
		cf_ks_time_format(cf_ks_now(), when, sizeof(when));
		copy = json_deep_copy(t->doc);
		if (copy == NULL)
			return -ENOMEM;
		json_object_set_new(copy, "shredded", json_true());
		json_object_set_new(copy, "shredded_at", json_string(when));
		json_decref(t->doc);
		t->doc = copy;
		rc = save_doc(t);
		if (rc < 0)
			return ks_err(rc, "tenant '%s': cannot mark shredded: "
			    "%s", t->name, strerror(-rc));
	}
	/* Every regular file under keys/ goes, not only the versions we
	 * recognise: a temporary left by a crash holds a wrapped key too. */
	rc = shred_all(t, &n);
	if (rc < 0)
		return rc;
	rc = scan_versions(t);
	if (rc < 0)
		return rc;
	if (t->nversions != 0)
		return ks_err(-EIO, "tenant '%s': %zu wrapped keys remain "
		    "after shredding", t->name, t->nversions);
	{
		struct cf_ks_audit_field f[] = {
			{ "versions_destroyed", NULL, (long long)n },
		};

		rc = audit_tenant(t, "tenant.shred", f, 1);
	}
	return rc;
}

int
cf_ks_tenant_retired(const struct cf_ks_tenant *t, uint32_t version)
{
	json_t *a = json_object_get(t->doc, "retired_versions"), *e;
	size_t i;

	json_array_foreach(a, i, e) {
		if (json_is_integer(e) &&
		    json_integer_value(e) == (json_int_t)version)
			return 1;
	}
	return 0;
}

int
cf_ks_tenant_rotate_key(struct cf_ks_tenant *t, uint32_t *version)
{
	struct cf_secbuf *root = NULL;
	struct ks_kms *kms;
	uint32_t cur = cf_ks_tenant_key_version(t), v;
	char kek[160];
	json_t *copy = NULL;
	int rc;

	if (version != NULL)
		*version = 0;
	rc = reload_doc(t);
	if (rc < 0)
		return rc;
	cur = cf_ks_tenant_key_version(t);
	if (cf_ks_tenant_shredded(t))
		return ks_err(-EACCES, "tenant '%s' was crypto-shredded",
		    t->name);
	if (cf_ks_tenant_get(t, "kms_next") != NULL)
		return ks_err(-EBUSY, "tenant '%s' is part-way through a move "
		    "to KMS '%s': finish it first with 'coffer tenant "
		    "rotate-kek %s'", t->name, cf_ks_tenant_get(t, "kms_next"),
		    t->name);
	if (cur >= UINT32_MAX - 1 || t->nversions >= MAX_VERSIONS)
		return ks_err(-E2BIG, "tenant '%s' has too many key versions "
		    "(retire old ones first)", t->name);
	v = cur + 1;
	rc = ks_kms_get(t->home, t->kms, &kms);
	if (rc < 0)
		return rc;
	rc = cf_secbuf_random(&root, CF_KS_KEY_BYTES);
	if (rc < 0)
		goto out;
	/* Replaces a key a crash left beyond key_version: never used. */
	rc = write_wrapped(t, t->dir, kms, v, root);
	if (rc < 0)
		goto out;
	crash_point(11);
	copy = json_deep_copy(t->doc);
	if (copy == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	json_object_set_new(copy, "key_version", json_integer(v));
	json_decref(t->doc);
	t->doc = copy;
	copy = NULL;
	/* The commit point. */
	rc = save_doc(t);
	if (rc < 0) {
		json_object_set_new(t->doc, "key_version", json_integer(cur));
		rc = ks_err(rc, "tenant '%s': cannot save tenant.json: %s",
		    t->name, strerror(-rc));
		goto out;
	}
	rc = scan_versions(t);
	if (rc < 0)
		goto out;
	rc = cf_ks_tenant_describe_kek(t, v, kek, sizeof(kek));
	if (rc < 0)
		goto out;
	{
		struct cf_ks_audit_field f[] = {
			{ "key_version", NULL, v },
			{ "previous", NULL, cur },
			{ "kms", t->kms, 0 },
			{ "kek", kek, 0 },
		};

		rc = audit_tenant(t, "tenant.rotate_key", f, 4);
		if (rc < 0)
			goto out;
	}
	if (version != NULL)
		*version = v;
out:
	json_decref(copy);
	cf_secbuf_free(root);
	return rc;
}

int
cf_ks_tenant_retire_key(struct cf_ks_tenant *t, uint32_t version)
{
	char path[PATH_MAX];
	json_t *copy, *a;
	int rc, had;

	rc = reload_doc(t);
	if (rc < 0)
		return rc;
	if (cf_ks_tenant_shredded(t))
		return ks_err(-EACCES, "tenant '%s' was crypto-shredded",
		    t->name);
	if (version == 0 || version > cf_ks_tenant_key_version(t))
		return ks_err(-ENOENT, "tenant '%s' has no key version %u",
		    t->name, version);
	if (version == cf_ks_tenant_key_version(t))
		return ks_err(-EBUSY, "tenant '%s': version %u is the newest "
		    "key version (new data uses it); rotate first", t->name,
		    version);
	snprintf(path, sizeof(path), "%s/keys/v%u.wk", t->dir, version);
	had = faccessat(t->home->dirfd, path, F_OK, AT_SYMLINK_NOFOLLOW) == 0;
	if (cf_ks_tenant_retired(t, version) && !had)
		return ks_err(-EALREADY, "tenant '%s': key version %u is "
		    "already retired", t->name, version);
	if (!cf_ks_tenant_retired(t, version)) {
		if (!had)
			return ks_err(-ENOENT, "tenant '%s' has no key version "
			    "%u", t->name, version);
		/* Record first: a crash leaves a version that no longer
		 * unlocks and whose file a rerun shreds. */
		copy = json_deep_copy(t->doc);
		if (copy == NULL)
			return -ENOMEM;
		a = json_object_get(copy, "retired_versions");
		if (!json_is_array(a)) {
			a = json_array();
			json_object_set_new(copy, "retired_versions", a);
		}
		json_array_append_new(a, json_integer(version));
		json_decref(t->doc);
		t->doc = copy;
		rc = save_doc(t);
		if (rc < 0)
			return ks_err(rc, "tenant '%s': cannot save "
			    "tenant.json: %s", t->name, strerror(-rc));
		crash_point(12);
	}
	rc = ks_shred_file(t->home->dirfd, path);
	if (rc < 0 && rc != -ENOENT)
		return ks_err(rc, "tenant '%s': cannot destroy %s: %s",
		    t->name, path, strerror(-rc));
	rc = scan_versions(t);
	if (rc < 0)
		return rc;
	{
		struct cf_ks_audit_field f[] = {
			{ "key_version", NULL, version },
			{ "newest", NULL, cf_ks_tenant_key_version(t) },
		};

		rc = audit_tenant(t, "tenant.retire_key", f, 2);
	}
	return rc;
}
