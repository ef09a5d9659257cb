/*
 * ks_kms_file.c - the embedded default KMS: KEKs sealed under a passphrase.
 *
 * State lives in HOME/kms/NAME/: one sealed KEK file per KEK
 * (kek-<id>.key, docs/format/keystore.md) and "current", the id of the
 * KEK that wraps new keys.  The passphrase is asked once per process;
 * each KEK is unsealed at most once and then kept in locked memory that
 * is made inaccessible while idle.  Three wrong passphrases in a row lock
 * the provider for 30 minutes (ks_lockout.c), across processes.
 *
 * Root keys are wrapped with XChaCha20-Poly1305 (random 24-byte nonce,
 * so no nonce bookkeeping is needed), the envelope header as AAD.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <sodium.h>

#include "ks_int.h"

#define FILE_MAX_KEKS 64
#define WRAP_NONCE 24U
#define WRAP_BLOB (WRAP_NONCE + CF_KS_KEY_BYTES + CF_KS_TAG_BYTES)

struct file_kek {
	unsigned char id[CF_KS_ID_BYTES];
	struct cf_secbuf *key;		/* noaccess while idle */
};

struct file_priv {
	char dir[CF_KS_NAME_MAX + 8];	/* "kms/NAME", relative to home */
	char subject[CF_KS_NAME_MAX + 8];	/* lockout subject "kms.NAME" */
	struct cf_secbuf *pass;		/* cached passphrase, noaccess idle */
	size_t passlen;
	struct file_kek keks[FILE_MAX_KEKS];
	size_t nkeks;
};

static int
file_open(struct ks_kms *kms)
{
	struct file_priv *p;

	p = calloc(1, sizeof(*p));
	if (p == NULL)
		return -ENOMEM;
	snprintf(p->dir, sizeof(p->dir), "kms/%s", kms->name);
	snprintf(p->subject, sizeof(p->subject), "kms.%s", kms->name);
	kms->priv = p;
	return 0;
}

static void
file_close(struct ks_kms *kms)
{
	struct file_priv *p = kms->priv;
	size_t i;

	if (p == NULL)
		return;
	for (i = 0; i < p->nkeks; i++)
		cf_secbuf_free(p->keks[i].key);
	cf_secbuf_free(p->pass);
	free(p);
	kms->priv = NULL;
}

static void
kek_path(const struct file_priv *p, const unsigned char *id, char *buf,
    size_t len)
{
	char hex[CF_KS_ID_BYTES * 2 + 1];

	ks_hex(hex, id, CF_KS_ID_BYTES);
	snprintf(buf, len, "%s/kek-%s.key", p->dir, hex);
}

/* Reads the id of the current KEK; -ENOENT if there is none yet. */
static int
current_id(struct ks_kms *kms, unsigned char id[CF_KS_ID_BYTES])
{
	struct file_priv *p = kms->priv;
	char path[PATH_MAX];
	unsigned char *buf = NULL;
	size_t len;
	int rc;

	snprintf(path, sizeof(path), "%s/current", p->dir);
	rc = ks_read_file(kms->home->dirfd, path, 128, &buf, &len);
	if (rc < 0)
		return rc;
	if (len > 0 && buf[len - 1] == '\n')
		buf[--len] = '\0';
	rc = ks_unhex(id, CF_KS_ID_BYTES, (const char *)buf);
	free(buf);
	if (rc < 0)
		return ks_err(-EPROTO, "KMS '%s': %s is damaged", kms->name,
		    path);
	return 0;
}

static int
get_pass(struct ks_kms *kms, int confirm)
{
	struct file_priv *p = kms->priv;

	int rc;

	if (p->pass != NULL)
		return 0;
	rc = ks_home_passphrase(kms->home, kms->name,
	    ks_kms_conf(kms, "passphrase_file"), confirm, &p->pass,
	    &p->passlen);
	if (rc == 0)
		cf_secbuf_noaccess(p->pass);
	return rc;
}

static void
forget_pass(struct file_priv *p)
{
	cf_secbuf_free(p->pass);
	p->pass = NULL;
	p->passlen = 0;
}

/*
 * Finds or unseals KEK id.  On success *kek points into the cache and is
 * readable; the caller makes it noaccess again with cf_secbuf_noaccess.
 */
static int
load_kek(struct ks_kms *kms, const unsigned char *id, struct cf_secbuf **kek)
{
	struct file_priv *p = kms->priv;
	struct cf_secbuf *k = NULL;
	unsigned char got_id[CF_KS_ID_BYTES];
	char path[PATH_MAX], hex[CF_KS_ID_BYTES * 2 + 1];
	unsigned char *buf = NULL;
	size_t i, len;
	int rc;

	*kek = NULL;
	for (i = 0; i < p->nkeks; i++) {
		if (sodium_memcmp(p->keks[i].id, id, CF_KS_ID_BYTES) == 0) {
			cf_secbuf_readonly(p->keks[i].key);
			*kek = p->keks[i].key;
			return 0;
		}
	}
	if (p->nkeks == FILE_MAX_KEKS)
		return ks_err(-EMFILE, "KMS '%s': too many KEKs in use",
		    kms->name);
	ks_hex(hex, id, CF_KS_ID_BYTES);
	kek_path(p, id, path, sizeof(path));
	rc = ks_read_file(kms->home->dirfd, path, 4096, &buf, &len);
	if (rc == -ENOENT)
		return ks_err(-ENOENT, "KMS '%s': KEK %.16s... does not exist "
		    "(destroyed?)", kms->name, hex);
	if (rc < 0)
		return ks_err(rc, "KMS '%s': cannot read %s: %s", kms->name,
		    path, strerror(-rc));
	rc = get_pass(kms, 0);
	if (rc < 0)
		goto out;
	rc = ks_lockout_attempt(kms->home, p->subject);
	if (rc < 0)
		goto out;
	cf_secbuf_readonly(p->pass);
	rc = cf_ks_kekfile_open(buf, len, (const char *)cf_secbuf_cdata(p->pass),
	    p->passlen, got_id, &k);
	cf_secbuf_noaccess(p->pass);
	if (rc == -EBADMSG) {
		forget_pass(p);
		rc = ks_lockout_fail(kms->home, p->subject);
		goto out;
	}
	if (rc < 0) {
		/* Malformed file: not a guess, so not a failure. */
		(void)!ks_lockout_reset(kms->home, p->subject);
		goto out;
	}
	if (sodium_memcmp(got_id, id, CF_KS_ID_BYTES) != 0) {
		rc = ks_err(-EBADMSG, "KMS '%s': %s holds another KEK (file "
		    "swapped)", kms->name, path);
		goto out;
	}
	rc = ks_lockout_reset(kms->home, p->subject);
	if (rc < 0)
		goto out;
	memcpy(p->keks[p->nkeks].id, id, CF_KS_ID_BYTES);
	p->keks[p->nkeks].key = k;
	p->nkeks++;
	cf_secbuf_readonly(k);
	*kek = k;
	k = NULL;
	rc = 0;
out:
	cf_secbuf_free(k);
	free(buf);
	return rc;
}

static uint64_t
conf_u64(struct ks_kms *kms, const char *key, uint64_t def)
{
	const char *v = ks_kms_conf(kms, key);
	char *end;
	unsigned long long n;

	if (v == NULL)
		return def;
	errno = 0;
	n = strtoull(v, &end, 10);
	if (errno != 0 || end == v || *end != '\0')
		return 0;	/* rejected by the range check of the caller */
	return n;
}

/* Creates a new KEK, seals it, and makes it current.  Audited. */
static int
new_kek(struct ks_kms *kms, int first)
{
	struct file_priv *p = kms->priv;
	struct cf_secbuf *k = NULL;
	unsigned char id[CF_KS_ID_BYTES], sealed[KS_KK_BYTES];
	char path[PATH_MAX], hex[CF_KS_ID_BYTES * 2 + 2];
	uint64_t ops, mem;
	int rc;

	ops = conf_u64(kms, "argon2_ops", KS_KK_OPS_DEFAULT);
	mem = conf_u64(kms, "argon2_mem_kib", KS_KK_MEM_DEFAULT / 1024);
	mem = mem > KS_KK_MEM_MAX / 1024 ? 0 : mem * 1024;	/* no overflow */
	if (ops < KS_KK_OPS_MIN || ops > KS_KK_OPS_MAX || mem < KS_KK_MEM_MIN ||
	    mem > KS_KK_MEM_MAX)
		return ks_err(-EINVAL, "[kms.%s]: argon2_ops must be %u..%u and "
		    "argon2_mem_kib %llu..%llu", kms->name, KS_KK_OPS_MIN,
		    KS_KK_OPS_MAX, KS_KK_MEM_MIN / 1024, KS_KK_MEM_MAX / 1024);
	rc = get_pass(kms, first);
	if (rc < 0)
		return rc;
	rc = ks_mkdirs(kms->home->dirfd, p->dir, 0700);
	if (rc < 0)
		return ks_err(rc, "cannot create %s: %s", p->dir, strerror(-rc));
	rc = cf_secbuf_random(&k, CF_KS_KEY_BYTES);
	if (rc < 0)
		return rc;
	randombytes_buf(id, sizeof(id));
	cf_secbuf_readonly(p->pass);
	rc = ks_kekfile_seal(sealed, (const char *)cf_secbuf_cdata(p->pass),
	    p->passlen, (uint32_t)ops, mem, id, k);
	cf_secbuf_noaccess(p->pass);
	if (rc < 0)
		goto out;
	kek_path(p, id, path, sizeof(path));
	rc = ks_write_file_atomic(kms->home->dirfd, path, sealed,
	    sizeof(sealed), 0600);
	if (rc < 0) {
		ks_err(rc, "cannot write %s: %s", path, strerror(-rc));
		goto out;
	}
	ks_hex(hex, id, CF_KS_ID_BYTES);
	hex[CF_KS_ID_BYTES * 2] = '\n';
	hex[CF_KS_ID_BYTES * 2 + 1] = '\0';
	snprintf(path, sizeof(path), "%s/current", p->dir);
	rc = ks_write_file_atomic(kms->home->dirfd, path, hex, strlen(hex),
	    0600);
	if (rc < 0)
		goto out;
	hex[CF_KS_ID_BYTES * 2] = '\0';
	{
		struct cf_ks_audit_field f[] = {
			{ "kms", kms->name, 0 },
			{ "kek", hex, 0 },
		};

		rc = cf_ks_audit_append(kms->home, "kms.kek_created", f, 2);
		if (rc < 0)
			goto out;
	}
	if (p->nkeks < FILE_MAX_KEKS) {
		memcpy(p->keks[p->nkeks].id, id, CF_KS_ID_BYTES);
		p->keks[p->nkeks].key = k;
		cf_secbuf_noaccess(k);
		p->nkeks++;
		k = NULL;
	}
	rc = 0;
out:
	sodium_memzero(sealed, sizeof(sealed));
	cf_secbuf_free(k);
	return rc;
}

static int
file_current(struct ks_kms *kms, unsigned char kek_id[CF_KS_ID_BYTES],
    uint8_t *alg)
{
	int rc;

	*alg = CF_KS_WRAP_XCHACHA20POLY1305;
	rc = current_id(kms, kek_id);
	if (rc != -ENOENT)
		return rc;
	rc = new_kek(kms, 1);
	if (rc < 0)
		return rc;
	return current_id(kms, kek_id);
}

static int
file_wrap(struct ks_kms *kms, const unsigned char *kek_id, uint8_t alg,
    const unsigned char *aad, size_t aadlen, const struct cf_secbuf *key,
    unsigned char *blob, size_t *bloblen)
{
	struct cf_secbuf *kek = NULL;
	unsigned long long clen;
	int rc;

	*bloblen = 0;
	if (alg != CF_KS_WRAP_XCHACHA20POLY1305)
		cf_misuse("file_wrap: algorithm not named by file_current");
	rc = load_kek(kms, kek_id, &kek);
	if (rc < 0)
		return rc;
	randombytes_buf(blob, WRAP_NONCE);
	crypto_aead_xchacha20poly1305_ietf_encrypt(blob + WRAP_NONCE, &clen,
	    cf_secbuf_cdata(key), cf_secbuf_len(key), aad, aadlen, NULL, blob,
	    cf_secbuf_cdata(kek));
	cf_secbuf_noaccess(kek);
	*bloblen = WRAP_NONCE + (size_t)clen;
	return 0;
}

static int
file_unwrap(struct ks_kms *kms, const unsigned char *kek_id, uint8_t alg,
    const unsigned char *aad, size_t aadlen, const unsigned char *blob,
    size_t bloblen, struct cf_secbuf **key)
{
	struct cf_secbuf *kek = NULL, *k = NULL;
	unsigned long long mlen;
	int rc, r;

	*key = NULL;
	if (alg != CF_KS_WRAP_XCHACHA20POLY1305 || bloblen != WRAP_BLOB)
		return ks_err(-EPROTO, "KMS '%s': wrapped key has algorithm "
		    "%u / %zu bytes, not what the file KMS writes", kms->name,
		    alg, bloblen);
	rc = load_kek(kms, kek_id, &kek);
	if (rc < 0)
		return rc;
	rc = cf_secbuf_new(&k, CF_KS_KEY_BYTES);
	if (rc < 0) {
		cf_secbuf_noaccess(kek);
		return rc;
	}
	r = crypto_aead_xchacha20poly1305_ietf_decrypt(cf_secbuf_data(k),
	    &mlen, NULL, blob + WRAP_NONCE, bloblen - WRAP_NONCE, aad, aadlen,
	    blob, cf_secbuf_cdata(kek));
	cf_secbuf_noaccess(kek);
	if (r != 0) {
		cf_secbuf_free(k);
		return ks_err(-EBADMSG, "wrapped key does not authenticate "
		    "under KMS '%s' (altered, or bound to another tenant or "
		    "version)", kms->name);
	}
	*key = k;
	return 0;
}

static int
file_rotate(struct ks_kms *kms)
{
	unsigned char id[CF_KS_ID_BYTES];
	struct cf_secbuf *kek;
	int rc;

	/*
	 * Unseal the current KEK first: that proves the passphrase, so the
	 * new KEK is never sealed under a mistyped one.
	 */
	rc = current_id(kms, id);
	if (rc == 0) {
		rc = load_kek(kms, id, &kek);
		if (rc < 0)
			return rc;
		cf_secbuf_noaccess(kek);
	} else if (rc != -ENOENT) {
		return rc;
	}
	return new_kek(kms, rc == -ENOENT);
}

static int
file_describe(struct ks_kms *kms, const unsigned char *kek_id, char *buf,
    size_t len)
{
	char hex[CF_KS_ID_BYTES * 2 + 1];

	ks_hex(hex, kek_id, CF_KS_ID_BYTES);
	snprintf(buf, len, "file KMS '%s', KEK %s", kms->name, hex);
	return 0;
}

static int
file_destroy(struct ks_kms *kms, const unsigned char *kek_id)
{
	struct file_priv *p = kms->priv;
	char path[PATH_MAX];
	size_t i;

	for (i = 0; i < p->nkeks; i++) {
		if (sodium_memcmp(p->keks[i].id, kek_id, CF_KS_ID_BYTES) == 0) {
			cf_secbuf_free(p->keks[i].key);
			p->keks[i] = p->keks[--p->nkeks];
			break;
		}
	}
	kek_path(p, kek_id, path, sizeof(path));
	return ks_shred_file(kms->home->dirfd, path);
}

const struct ks_kms_ops ks_kms_file_ops = {
	.type = "file",
	.open = file_open,
	.current = file_current,
	.wrap = file_wrap,
	.unwrap = file_unwrap,
	.rotate = file_rotate,
	.describe = file_describe,
	.destroy = file_destroy,
	.close = file_close,
};
