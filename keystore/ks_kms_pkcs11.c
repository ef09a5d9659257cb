/*
 * ks_kms_pkcs11.c - the "pkcs11" KMS provider: KEKs inside a PKCS#11
 * token (an HSM, or SoftHSM2 in tests).
 *
 * The configured module is dlopen'ed, the token found by label (retried:
 * SoftHSM2 can miss a token while another process rewrites its files),
 * and the user logs in with a PIN read from a 0600 file owned by us.
 * Root keys are wrapped inside the token, so the KEK never leaves it,
 * with the configured mechanism (docs/kms.md, docs/format/keystore.md):
 *
 *   - aes-gcm (default, alg 2): CKM_AES_GCM through C_Encrypt, 12-byte
 *     random IV, 128-bit tag, the 48-byte envelope header as AAD;
 *     blob = IV || ciphertext || tag (60 bytes);
 *   - aes-key-wrap-pad (alg 3), for tokens without an AEAD: the root key
 *     is imported as a session object and wrapped with
 *     CKM_AES_KEY_WRAP_PAD (RFC 5649) through C_WrapKey; key wrap has no
 *     AAD, so a MAC over the header keyed from the root key follows
 *     (blob = wrapped (40) || MAC (32)), checked in constant time after
 *     C_UnwrapKey and before the key is handed out.
 *
 * Unwrapping follows the file's alg, not the configuration, so a change
 * of mechanism never strands a tenant; rotate-kek rewraps under the
 * configured one.
 *
 * KEKs are found by label: "key_label" is KEK version 1, rotation makes
 * "key_label.v2", "key_label.v3", ... and the highest version present is
 * the current one.  A KEK must be an AES-256 secret key that is sensitive
 * and not extractable; anything else is refused.  Its 16-byte KEK id is
 * BLAKE2b-128 over the token serial, label and CKA_ID (docs/kms.md), so
 * it names one key on one token without storing state outside the token.
 *
 * Wrong PINs count against the lockout subject "kms.NAME" (three in a
 * row lock it for 30 minutes).  The PIN is kept only for the C_Login call
 * and wiped.  Not here: RFC 3394 key wrap without padding, and key wrap
 * through C_Encrypt (SoftHSM2 offers CKM_AES_KEY_WRAP_PAD for
 * C_WrapKey/C_UnwrapKey only).
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>
#include <sodium.h>

#include "ks_int.h"

#define P11_IV 12U
#define P11_BLOB (P11_IV + CF_KS_KEY_BYTES + CF_KS_TAG_BYTES)
#define P11_MAX_KEYS 256	/* secret keys examined on one token */
#define P11_LABEL_MAX 64	/* longest key label we accept */
#define P11_CKAID_MAX 64	/* longest CKA_ID we accept */
#define P11_PIN_MAX 128
#define P11_TRIES 10		/* token discovery attempts */

struct p11_key {
	CK_OBJECT_HANDLE h;
	unsigned char id[CF_KS_ID_BYTES];	/* the KEK id */
	unsigned long version;		/* 0: not one of our labels */
	int aes256, sensitive, extractable;
	int can_wrap, can_unwrap;	/* CKA_WRAP, CKA_UNWRAP */
	char label[P11_LABEL_MAX + 1];
};

struct p11_priv {
	char subject[CF_KS_NAME_MAX + 8];	/* lockout subject "kms.NAME" */
	const char *module, *token, *key_label;	/* owned by the config */
	uint8_t alg;			/* new wraps: CF_KS_WRAP_* */
	void *dl;
	CK_FUNCTION_LIST_PTR f;
	int inited;			/* we called C_Initialize */
	pid_t pid;			/* process that initialised */
	CK_SLOT_ID slot;
	unsigned char serial[16];	/* token serial, blank-padded */
	CK_SESSION_HANDLE sess;
	int have_sess, logged_in;
};

static int
p11_open(struct ks_kms *kms)
{
	struct p11_priv *p;
	const char *mech;

	p = calloc(1, sizeof(*p));
	if (p == NULL)
		return -ENOMEM;
	snprintf(p->subject, sizeof(p->subject), "kms.%s", kms->name);
	p->module = ks_kms_conf(kms, "module");
	p->token = ks_kms_conf(kms, "token");
	p->key_label = ks_kms_conf(kms, "key_label");
	mech = ks_kms_conf(kms, "mechanism");
	if (p->module == NULL || p->token == NULL || p->key_label == NULL) {
		free(p);
		return ks_err(-EINVAL, "KMS '%s' (pkcs11): [kms.%s] needs "
		    "module, token and key_label", kms->name, kms->name);
	}
	if (p->module[0] != '/') {
		free(p);
		return ks_err(-EINVAL, "KMS '%s' (pkcs11): module must be an "
		    "absolute path", kms->name);
	}
	if (strlen(p->token) > 32 || strlen(p->key_label) > P11_LABEL_MAX - 8) {
		free(p);
		return ks_err(-EINVAL, "KMS '%s' (pkcs11): token label is "
		    "limited to 32 bytes, key_label to %d", kms->name,
		    P11_LABEL_MAX - 8);
	}
	if (mech == NULL || strcmp(mech, "aes-gcm") == 0)
		p->alg = CF_KS_WRAP_AES256GCM;
	else if (strcmp(mech, "aes-key-wrap-pad") == 0)
		p->alg = CF_KS_WRAP_AES256KWP;
	else {
		free(p);
		return ks_err(-ENOTSUP, "KMS '%s' (pkcs11): mechanism '%.32s' "
		    "is not supported; use aes-gcm or aes-key-wrap-pad (see "
		    "docs/kms.md)", kms->name, mech);
	}
	kms->priv = p;
	return 0;
}

static void
p11_close(struct ks_kms *kms)
{
	struct p11_priv *p = kms->priv;

	if (p == NULL)
		return;
	/* After fork(2) the child must not finalise the parent's state. */
	if (p->f != NULL && p->pid == getpid()) {
		if (p->logged_in)
			p->f->C_Logout(p->sess);
		if (p->have_sess)
			p->f->C_CloseSession(p->sess);
		if (p->inited)
			p->f->C_Finalize(NULL);
	}
	if (p->dl != NULL)
		dlclose(p->dl);
	free(p);
	kms->priv = NULL;
}

/* Errors that mean the token or session is unusable, not bad data. */
static int
rv_is_device(CK_RV rv)
{
	switch (rv) {
	case CKR_DEVICE_ERROR:
	case CKR_DEVICE_MEMORY:
	case CKR_DEVICE_REMOVED:
	case CKR_TOKEN_NOT_PRESENT:
	case CKR_TOKEN_NOT_RECOGNIZED:
	case CKR_SESSION_CLOSED:
	case CKR_SESSION_HANDLE_INVALID:
	case CKR_USER_NOT_LOGGED_IN:
	case CKR_CRYPTOKI_NOT_INITIALIZED:
	case CKR_HOST_MEMORY:
	case CKR_KEY_HANDLE_INVALID:
	case CKR_KEY_FUNCTION_NOT_PERMITTED:
	case CKR_MECHANISM_INVALID:
		return 1;
	default:
		return 0;
	}
}

/*
 * C_UnwrapKey errors that mean the wrapped bytes did not pass RFC 5649's
 * integrity check (SoftHSM2 2.6.1 says CKR_GENERAL_ERROR).  Narrower than
 * "not a device error" on purpose: a token that refuses our template
 * must not look like tampering, nor count against the tenant's lockout.
 */
static int
rv_is_wrap_data(CK_RV rv)
{
	switch (rv) {
	case CKR_GENERAL_ERROR:
	case CKR_FUNCTION_FAILED:
	case CKR_WRAPPED_KEY_INVALID:
	case CKR_WRAPPED_KEY_LEN_RANGE:
	case CKR_ENCRYPTED_DATA_INVALID:
	case CKR_ENCRYPTED_DATA_LEN_RANGE:
		return 1;
	default:
		return 0;
	}
}

static int
p11_initialize(struct ks_kms *kms)
{
	struct p11_priv *p = kms->priv;
	CK_C_INITIALIZE_ARGS args;
	CK_RV rv;

	memset(&args, 0, sizeof(args));
	args.flags = CKF_OS_LOCKING_OK;
	rv = p->f->C_Initialize(&args);
	if (rv == CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		p->inited = 0;	/* another provider owns it */
		return 0;
	}
	if (rv != CKR_OK)
		return ks_err(-EIO, "KMS '%s' (pkcs11): C_Initialize of %s "
		    "failed (CKR 0x%lx)", kms->name, p->module,
		    (unsigned long)rv);
	p->inited = 1;
	p->pid = getpid();
	return 0;
}

/* Loads the module: refuses one that others could have replaced. */
static int
p11_load(struct ks_kms *kms)
{
	struct p11_priv *p = kms->priv;
	CK_C_GetFunctionList getfl;
	struct stat st;
	CK_RV rv;

	if (p->f != NULL)
		return 0;
	if (stat(p->module, &st) != 0)
		return ks_err(-ENOENT, "KMS '%s' (pkcs11): cannot load module "
		    "%s: %s", kms->name, p->module, strerror(errno));
	if ((st.st_mode & 022) != 0 || (st.st_uid != 0 &&
	    st.st_uid != geteuid()))
		return ks_err(-EPERM, "KMS '%s' (pkcs11): module %s is "
		    "writable by others or owned by another user; refusing "
		    "to load it", kms->name, p->module);
	/* NODELETE: modules like SoftHSM2 register atexit handlers. */
	p->dl = dlopen(p->module, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
	if (p->dl == NULL)
		return ks_err(-EIO, "KMS '%s' (pkcs11): cannot load module "
		    "%s: %s", kms->name, p->module, dlerror());
	*(void **)&getfl = dlsym(p->dl, "C_GetFunctionList");
	if (getfl == NULL)
		return ks_err(-EIO, "KMS '%s' (pkcs11): %s is not a PKCS#11 "
		    "module (no C_GetFunctionList)", kms->name, p->module);
	rv = getfl(&p->f);
	if (rv != CKR_OK || p->f == NULL) {
		p->f = NULL;
		return ks_err(-EIO, "KMS '%s' (pkcs11): C_GetFunctionList "
		    "failed (CKR 0x%lx)", kms->name, (unsigned long)rv);
	}
	return p11_initialize(kms);
}

/* 1 if the blank-padded 32-byte token label equals want. */
static int
label_eq(const unsigned char lab[32], const char *want)
{
	size_t n = strlen(want), i;

	if (n > 32 || sodium_memcmp(lab, want, n) != 0)
		return 0;
	for (i = n; i < 32; i++)
		if (lab[i] != ' ' && lab[i] != '\0')
			return 0;
	return 1;
}

/*
 * Finds the slot whose token has the configured label.  A token can be
 * missed while another process rewrites SoftHSM2's token files, so the
 * search is retried, reinitialising the module in between.
 */
static int
p11_find_token(struct ks_kms *kms)
{
	struct p11_priv *p = kms->priv;
	CK_SLOT_ID slots[64];
	CK_TOKEN_INFO ti;
	CK_ULONG n, i;
	int tries, found;
	CK_RV rv;

	for (tries = 0; tries < P11_TRIES; tries++) {
		if (tries > 0) {
			struct timespec ts = { 0, 20000000L * tries };

			nanosleep(&ts, NULL);
			if (p->inited) {
				p->f->C_Finalize(NULL);
				p->inited = 0;
				if (p11_initialize(kms) < 0)
					continue;
			}
		}
		n = sizeof(slots) / sizeof(slots[0]);
		rv = p->f->C_GetSlotList(CK_TRUE, slots, &n);
		if (rv != CKR_OK)
			continue;
		found = 0;
		for (i = 0; i < n; i++) {
			if (p->f->C_GetTokenInfo(slots[i], &ti) != CKR_OK)
				continue;
			if (!label_eq(ti.label, p->token))
				continue;
			if (found++ == 0) {
				p->slot = slots[i];
				memcpy(p->serial, ti.serialNumber,
				    sizeof(p->serial));
			}
		}
		if (found > 1)
			return ks_err(-EINVAL, "KMS '%s' (pkcs11): %d tokens "
			    "are labelled '%s'; labels must be unique",
			    kms->name, found, p->token);
		if (found == 1)
			return 0;
	}
	return ks_err(-ENODEV, "KMS '%s' (pkcs11): no token labelled '%s' in "
	    "module %s", kms->name, p->token, p->module);
}

/*
 * Reads the PIN from pin_file (or COFFER_PKCS11_PIN_FILE): a regular
 * file we own, readable by nobody else.  One trailing newline is
 * dropped.  On success *pin is owned by the caller.
 */
static int
read_pin(struct ks_kms *kms, struct cf_secbuf **pin, size_t *len)
{
	const char *path = ks_kms_conf(kms, "pin_file");
	struct cf_secbuf *sb = NULL;
	char what[CF_KS_NAME_MAX + 32];
	unsigned char *b;
	size_t got = 0;
	int rc;

	*pin = NULL;
	*len = 0;
	if (path == NULL || path[0] == '\0')
		path = getenv("COFFER_PKCS11_PIN_FILE");
	if (path == NULL || path[0] == '\0')
		return ks_err(-EACCES, "KMS '%s' (pkcs11): no PIN: set pin_file "
		    "in [kms.%s] or COFFER_PKCS11_PIN_FILE", kms->name,
		    kms->name);
	snprintf(what, sizeof(what), "KMS '%s' (pkcs11): PIN file",
	    kms->name);
	rc = cf_secbuf_new(&sb, P11_PIN_MAX + 1);
	if (rc < 0)
		goto out;
	b = cf_secbuf_data(sb);
	rc = ks_read_secret(AT_FDCWD, path, what, sb, P11_PIN_MAX, &got);
	if (rc < 0) {
		/* As before the shared reader: too long is EINVAL, else EACCES. */
		rc = rc == -EFBIG ? -EINVAL : -EACCES;
		goto out;
	}
	if (got > 0 && b[got - 1] == '\n')
		got--;
	if (got > 0 && b[got - 1] == '\r')
		got--;
	if (got == 0) {
		rc = ks_err(-EINVAL, "KMS '%s' (pkcs11): PIN file %s is empty",
		    kms->name, path);
		goto out;
	}
	*pin = sb;
	*len = got;
	sb = NULL;
	rc = 0;
out:
	cf_secbuf_free(sb);
	return rc;
}

/* Opens a session and logs in, counting wrong PINs in the lockout. */
static int
p11_login(struct ks_kms *kms)
{
	struct p11_priv *p = kms->priv;
	struct cf_secbuf *pin = NULL;
	char msg[512];
	size_t pinlen;
	CK_RV rv;
	int rc;

	if (!p->have_sess) {
		rv = p->f->C_OpenSession(p->slot, CKF_SERIAL_SESSION |
		    CKF_RW_SESSION, NULL, NULL, &p->sess);
		if (rv != CKR_OK)
			return ks_err(-EIO, "KMS '%s' (pkcs11): cannot open a "
			    "session on token '%s' (CKR 0x%lx)", kms->name,
			    p->token, (unsigned long)rv);
		p->have_sess = 1;
	}
	rc = read_pin(kms, &pin, &pinlen);
	if (rc < 0)
		return rc;
	/* Counted before the try, so parallel guesses are counted too. */
	rc = ks_lockout_attempt(kms->home, p->subject);
	if (rc < 0)
		goto out;
	rv = p->f->C_Login(p->sess, CKU_USER, cf_secbuf_data(pin), pinlen);
	cf_secbuf_free(pin);
	pin = NULL;
	if (rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN) {
		p->logged_in = 1;
		rc = ks_lockout_reset(kms->home, p->subject);
		goto out;
	}
	if (rv == CKR_PIN_INCORRECT) {
		rc = ks_lockout_fail(kms->home, p->subject);
		snprintf(msg, sizeof(msg), "%s", cf_ks_last_error());
		rc = ks_err(rc, "KMS '%s' (pkcs11): the token rejected the PIN: "
		    "%s", kms->name, msg);
		goto out;
	}
	if (rv == CKR_PIN_LOCKED || rv == CKR_PIN_EXPIRED) {
		(void)!ks_lockout_fail(kms->home, p->subject);
		rc = ks_err(-EACCES, "KMS '%s' (pkcs11): the user PIN of token "
		    "'%s' is %s; its security officer must reset it",
		    kms->name, p->token, rv == CKR_PIN_LOCKED ? "locked by "
		    "the token" : "expired");
		goto out;
	}
	(void)!ks_lockout_reset(kms->home, p->subject);
	rc = ks_err(-EIO, "KMS '%s' (pkcs11): C_Login on token '%s' failed "
	    "(CKR 0x%lx)", kms->name, p->token, (unsigned long)rv);
out:
	cf_secbuf_free(pin);
	return rc;
}

/* Module loaded, token found, logged in. */
static int
p11_ready(struct ks_kms *kms)
{
	struct p11_priv *p = kms->priv;
	int rc;

	if (p->logged_in && p->pid == getpid())
		return 0;
	if (p->f != NULL && p->pid != getpid()) {
		/* Forked: SoftHSM2 needs C_Initialize again in the child. */
		p->have_sess = p->logged_in = 0;
		rc = p11_initialize(kms);
		if (rc < 0)
			return rc;
	}
	rc = p11_load(kms);
	if (rc < 0)
		return rc;
	rc = p11_find_token(kms);
	if (rc < 0)
		return rc;
	return p11_login(kms);
}

/* The version a label names: key_label is 1, key_label.vN is N >= 2. */
static unsigned long
label_version(const char *key_label, const char *label)
{
	size_t n = strlen(key_label);
	unsigned long v;
	char *end, canon[32];

	if (strncmp(label, key_label, n) != 0)
		return 0;
	if (label[n] == '\0')
		return 1;
	if (label[n] != '.' || label[n + 1] != 'v')
		return 0;
	errno = 0;
	v = strtoul(label + n + 2, &end, 10);
	if (errno != 0 || *end != '\0' || v < 2 || v > 1000000)
		return 0;
	snprintf(canon, sizeof(canon), "%lu", v);
	return strcmp(canon, label + n + 2) == 0 ? v : 0;
}

/* KEK id = BLAKE2b-128(context || serial || len || label || len || id). */
static void
kek_id_of(const struct p11_priv *p, const char *label, size_t labellen,
    const unsigned char *ckaid, size_t idlen, unsigned char out[CF_KS_ID_BYTES])
{
	static const char ctx[] = "coffer pkcs11 kek id v1";
	crypto_generichash_state st;
	unsigned char l[4];

	crypto_generichash_init(&st, NULL, 0, CF_KS_ID_BYTES);
	crypto_generichash_update(&st, (const unsigned char *)ctx, sizeof(ctx));
	crypto_generichash_update(&st, p->serial, sizeof(p->serial));
	l[0] = (unsigned char)labellen;
	l[1] = (unsigned char)(labellen >> 8);
	l[2] = l[3] = 0;
	crypto_generichash_update(&st, l, 4);
	crypto_generichash_update(&st, (const unsigned char *)label, labellen);
	l[0] = (unsigned char)idlen;
	l[1] = (unsigned char)(idlen >> 8);
	crypto_generichash_update(&st, l, 4);
	crypto_generichash_update(&st, ckaid, idlen);
	crypto_generichash_final(&st, out, CF_KS_ID_BYTES);
}

/* Reads the attributes of one secret key object into k. */
static int
p11_key_info(struct ks_kms *kms, CK_OBJECT_HANDLE h, struct p11_key *k)
{
	struct p11_priv *p = kms->priv;
	unsigned char ckaid[P11_CKAID_MAX];
	CK_KEY_TYPE kt = 0;
	CK_BBOOL sens = CK_FALSE, extr = CK_TRUE, wr = CK_FALSE;
	CK_BBOOL unwr = CK_FALSE;
	CK_ULONG vlen = 0;
	CK_ATTRIBUTE a[] = {
		{ CKA_LABEL, k->label, P11_LABEL_MAX },
		{ CKA_ID, ckaid, sizeof(ckaid) },
		{ CKA_KEY_TYPE, &kt, sizeof(kt) },
		{ CKA_SENSITIVE, &sens, sizeof(sens) },
		{ CKA_EXTRACTABLE, &extr, sizeof(extr) },
		{ CKA_VALUE_LEN, &vlen, sizeof(vlen) },
		{ CKA_WRAP, &wr, sizeof(wr) },
		{ CKA_UNWRAP, &unwr, sizeof(unwr) },
	};
	size_t i;
	CK_RV rv;

	memset(k, 0, sizeof(*k));
	k->h = h;
	rv = p->f->C_GetAttributeValue(p->sess, h, a, sizeof(a) / sizeof(a[0]));
	if (rv != CKR_OK && rv != CKR_ATTRIBUTE_SENSITIVE &&
	    rv != CKR_ATTRIBUTE_TYPE_INVALID && rv != CKR_BUFFER_TOO_SMALL)
		return -EIO;
	for (i = 0; i < sizeof(a) / sizeof(a[0]); i++)
		if (a[i].ulValueLen == CK_UNAVAILABLE_INFORMATION)
			a[i].ulValueLen = 0;
	if (a[0].ulValueLen == 0 || a[0].ulValueLen > P11_LABEL_MAX)
		return 0;	/* unlabelled or too long: not ours */
	k->label[a[0].ulValueLen] = '\0';
	if (strlen(k->label) != a[0].ulValueLen)
		return 0;	/* embedded NUL */
	if (a[1].ulValueLen > sizeof(ckaid))
		return 0;
	k->version = label_version(p->key_label, k->label);
	k->aes256 = a[2].ulValueLen != 0 && kt == CKK_AES &&
	    a[5].ulValueLen != 0 && vlen == CF_KS_KEY_BYTES;
	k->sensitive = a[3].ulValueLen != 0 && sens == CK_TRUE;
	k->extractable = a[4].ulValueLen == 0 || extr != CK_FALSE;
	k->can_wrap = a[6].ulValueLen != 0 && wr == CK_TRUE;
	k->can_unwrap = a[7].ulValueLen != 0 && unwr == CK_TRUE;
	kek_id_of(p, k->label, a[0].ulValueLen, ckaid, a[1].ulValueLen, k->id);
	return 0;
}

/*
 * Lists the token's secret keys that carry one of our labels.  keys has
 * room for P11_MAX_KEYS entries.
 */
static int
p11_list(struct ks_kms *kms, struct p11_key *keys, size_t *n)
{
	struct p11_priv *p = kms->priv;
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_ATTRIBUTE tmpl[] = { { CKA_CLASS, &cls, sizeof(cls) } };
	CK_OBJECT_HANDLE hs[P11_MAX_KEYS];
	CK_ULONG got = 0, i;
	CK_RV rv;
	int rc;

	*n = 0;
	rv = p->f->C_FindObjectsInit(p->sess, tmpl, 1);
	if (rv != CKR_OK)
		return ks_err(-EIO, "KMS '%s' (pkcs11): C_FindObjectsInit "
		    "failed (CKR 0x%lx)", kms->name, (unsigned long)rv);
	rv = p->f->C_FindObjects(p->sess, hs, P11_MAX_KEYS, &got);
	p->f->C_FindObjectsFinal(p->sess);
	if (rv != CKR_OK)
		return ks_err(-EIO, "KMS '%s' (pkcs11): C_FindObjects failed "
		    "(CKR 0x%lx)", kms->name, (unsigned long)rv);
	for (i = 0; i < got; i++) {
		rc = p11_key_info(kms, hs[i], &keys[*n]);
		if (rc < 0)
			return ks_err(rc, "KMS '%s' (pkcs11): cannot read key "
			    "attributes", kms->name);
		if (keys[*n].version != 0)
			(*n)++;
	}
	return 0;
}

/* Refuses a KEK that is not AES-256, or that could leave the token. */
static int
p11_check(struct ks_kms *kms, const struct p11_key *k)
{
	if (k->extractable || !k->sensitive)
		return ks_err(-EINVAL, "KMS '%s' (pkcs11): key '%s' is %s; a "
		    "KEK must be sensitive and non-extractable (pkcs11-tool "
		    "--keygen --sensitive, without --extractable)", kms->name,
		    k->label, k->extractable ? "extractable" : "not sensitive");
	if (!k->aes256)
		return ks_err(-EINVAL, "KMS '%s' (pkcs11): key '%s' is not an "
		    "AES-256 key", kms->name, k->label);
	return 0;
}

/* Finds the KEK called id; -ENOENT if the token no longer holds it. */
static int
p11_find(struct ks_kms *kms, const unsigned char *id, struct p11_key *out)
{
	struct p11_key *keys;
	char hex[CF_KS_ID_BYTES * 2 + 1];
	size_t n, i, found = 0;
	int rc;

	keys = calloc(P11_MAX_KEYS, sizeof(*keys));
	if (keys == NULL)
		return -ENOMEM;
	rc = p11_list(kms, keys, &n);
	if (rc < 0)
		goto out;
	for (i = 0; i < n; i++) {
		if (sodium_memcmp(keys[i].id, id, CF_KS_ID_BYTES) == 0) {
			if (found++ == 0)
				*out = keys[i];
		}
	}
	ks_hex(hex, id, CF_KS_ID_BYTES);
	if (found == 0) {
		rc = ks_err(-ENOENT, "KMS '%s' (pkcs11): KEK %s is not on token "
		    "'%s' (deleted, or another token?)", kms->name, hex,
		    ((struct p11_priv *)kms->priv)->token);
		goto out;
	}
	if (found > 1) {
		rc = ks_err(-EINVAL, "KMS '%s' (pkcs11): %zu keys on the token "
		    "have KEK id %s (same label and CKA_ID)", kms->name, found,
		    hex);
		goto out;
	}
	rc = p11_check(kms, out);
out:
	free(keys);
	return rc;
}

/* The newest KEK (highest label version), checked; *maxv its version. */
static int
p11_newest(struct ks_kms *kms, struct p11_key *out, unsigned long *maxv)
{
	struct p11_priv *p = kms->priv;
	struct p11_key *keys;
	size_t n, i, found = 0;
	int rc;

	*maxv = 0;
	keys = calloc(P11_MAX_KEYS, sizeof(*keys));
	if (keys == NULL)
		return -ENOMEM;
	rc = p11_list(kms, keys, &n);
	if (rc < 0)
		goto out;
	for (i = 0; i < n; i++)
		if (keys[i].version > *maxv)
			*maxv = keys[i].version;
	for (i = 0; i < n; i++) {
		if (keys[i].version == *maxv && found++ == 0)
			*out = keys[i];
	}
	if (found == 0) {
		rc = ks_err(-ENOENT, "KMS '%s' (pkcs11): no key labelled '%s' on "
		    "token '%s' (create it: see docs/kms.md)", kms->name,
		    p->key_label, p->token);
		goto out;
	}
	if (found > 1) {
		rc = ks_err(-EINVAL, "KMS '%s' (pkcs11): %zu keys on token '%s' "
		    "are labelled '%s'; KEK labels must be unique", kms->name,
		    found, p->token, out->label);
		goto out;
	}
	rc = 0;
out:
	free(keys);
	return rc;
}

static int
p11_current(struct ks_kms *kms, unsigned char kek_id[CF_KS_ID_BYTES],
    uint8_t *alg)
{
	struct p11_key k;
	unsigned long v;
	int rc;

	*alg = ((struct p11_priv *)kms->priv)->alg;
	rc = p11_ready(kms);
	if (rc < 0)
		return rc;
	rc = p11_newest(kms, &k, &v);
	if (rc < 0)
		return rc;
	rc = p11_check(kms, &k);
	if (rc < 0)
		return rc;
	memcpy(kek_id, k.id, CF_KS_ID_BYTES);
	return 0;
}

static void
gcm_mech(CK_MECHANISM *m, CK_GCM_PARAMS *gp, unsigned char *iv,
    const unsigned char *aad, size_t aadlen)
{
	memset(gp, 0, sizeof(*gp));
	gp->pIv = iv;
	gp->ulIvLen = P11_IV;
	gp->ulIvBits = P11_IV * 8;
	gp->pAAD = (unsigned char *)(uintptr_t)aad;
	gp->ulAADLen = aadlen;
	gp->ulTagBits = CF_KS_TAG_BYTES * 8;
	m->mechanism = CKM_AES_GCM;
	m->pParameter = gp;
	m->ulParameterLen = sizeof(*gp);
}

static int
gcm_wrap(struct ks_kms *kms, const struct p11_key *k,
    const unsigned char *aad, size_t aadlen, const struct cf_secbuf *key,
    unsigned char *blob, size_t *bloblen)
{
	struct p11_priv *p = kms->priv;
	CK_MECHANISM m;
	CK_GCM_PARAMS gp;
	CK_ULONG outlen;
	CK_RV rv;

	randombytes_buf(blob, P11_IV);
	gcm_mech(&m, &gp, blob, aad, aadlen);
	rv = p->f->C_EncryptInit(p->sess, &m, k->h);
	if (rv != CKR_OK)
		return ks_err(-EIO, "KMS '%s' (pkcs11): C_EncryptInit with "
		    "CKM_AES_GCM failed (CKR 0x%lx)", kms->name,
		    (unsigned long)rv);
	outlen = CF_KS_KEY_BYTES + CF_KS_TAG_BYTES;
	rv = p->f->C_Encrypt(p->sess, (unsigned char *)(uintptr_t)
	    cf_secbuf_cdata(key), CF_KS_KEY_BYTES, blob + P11_IV, &outlen);
	if (rv != CKR_OK || outlen != CF_KS_KEY_BYTES + CF_KS_TAG_BYTES) {
		sodium_memzero(blob, P11_BLOB);
		return ks_err(-EIO, "KMS '%s' (pkcs11): C_Encrypt failed (CKR "
		    "0x%lx)", kms->name, (unsigned long)rv);
	}
	*bloblen = P11_BLOB;
	return 0;
}

static int
kwp_refused(struct ks_kms *kms, const struct p11_key *k, const char *what)
{
	return ks_err(-EINVAL, "KMS '%s' (pkcs11): key '%s' has %s false; "
	    "mechanism aes-key-wrap-pad needs a KEK with CKA_WRAP and "
	    "CKA_UNWRAP (pkcs11-tool --keygen --usage-wrap, docs/kms.md)",
	    kms->name, k->label, what);
}

/*
 * alg 3: the root key goes into the token as a session object (never a
 * token object), is wrapped by the KEK with CKM_AES_KEY_WRAP_PAD and
 * destroyed again; the MAC over header || wrapped follows.
 */
static int
kwp_wrap(struct ks_kms *kms, const struct p11_key *k,
    const unsigned char *hdr, const struct cf_secbuf *key,
    unsigned char *blob, size_t *bloblen)
{
	struct p11_priv *p = kms->priv;
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE kt = CKK_AES;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_MECHANISM m = { CKM_AES_KEY_WRAP_PAD, NULL, 0 };
	CK_ATTRIBUTE t[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_KEY_TYPE, &kt, sizeof(kt) },
		{ CKA_TOKEN, &no, sizeof(no) },
		{ CKA_PRIVATE, &yes, sizeof(yes) },
		{ CKA_SENSITIVE, &yes, sizeof(yes) },
		{ CKA_EXTRACTABLE, &yes, sizeof(yes) },
		{ CKA_VALUE, (void *)(uintptr_t)cf_secbuf_cdata(key),
		    CF_KS_KEY_BYTES },
	};
	CK_OBJECT_HANDLE h;
	CK_ULONG outlen;
	CK_RV rv, drv;

	if (!k->can_wrap)
		return kwp_refused(kms, k, "CKA_WRAP");
	rv = p->f->C_CreateObject(p->sess, t, sizeof(t) / sizeof(t[0]), &h);
	if (rv != CKR_OK)
		return ks_err(-EIO, "KMS '%s' (pkcs11): cannot import the root "
		    "key as a session object for C_WrapKey (CKR 0x%lx)",
		    kms->name, (unsigned long)rv);
	outlen = KS_KWP_WRAPPED_BYTES;
	rv = p->f->C_WrapKey(p->sess, &m, k->h, h, blob, &outlen);
	drv = p->f->C_DestroyObject(p->sess, h);
	if (rv != CKR_OK || outlen != KS_KWP_WRAPPED_BYTES) {
		sodium_memzero(blob, KS_KWP_BLOB_BYTES);
		return ks_err(-EIO, "KMS '%s' (pkcs11): C_WrapKey with "
		    "CKM_AES_KEY_WRAP_PAD failed (CKR 0x%lx, %lu bytes)",
		    kms->name, (unsigned long)rv, (unsigned long)outlen);
	}
	if (drv != CKR_OK) {
		sodium_memzero(blob, KS_KWP_BLOB_BYTES);
		return ks_err(-EIO, "KMS '%s' (pkcs11): cannot destroy the "
		    "session copy of the root key (CKR 0x%lx)", kms->name,
		    (unsigned long)drv);
	}
	ks_kwp_mac(cf_secbuf_cdata(key), hdr, blob, blob +
	    KS_KWP_WRAPPED_BYTES);
	*bloblen = KS_KWP_BLOB_BYTES;
	return 0;
}

static int
p11_wrap(struct ks_kms *kms, const unsigned char *kek_id, uint8_t alg,
    const unsigned char *aad, size_t aadlen, const struct cf_secbuf *key,
    unsigned char *blob, size_t *bloblen)
{
	struct p11_key k;
	int rc;

	*bloblen = 0;
	if ((alg != CF_KS_WRAP_AES256GCM && alg != CF_KS_WRAP_AES256KWP) ||
	    cf_secbuf_len(key) != CF_KS_KEY_BYTES ||
	    aadlen != CF_KS_ENVELOPE_HEADER_BYTES)
		cf_misuse("p11_wrap: algorithm or key not as p11_current named");
	rc = p11_ready(kms);
	if (rc < 0)
		return rc;
	rc = p11_find(kms, kek_id, &k);
	if (rc < 0)
		return rc;
	if (alg == CF_KS_WRAP_AES256KWP)
		return kwp_wrap(kms, &k, aad, key, blob, bloblen);
	return gcm_wrap(kms, &k, aad, aadlen, key, blob, bloblen);
}

static int
bad_auth(struct ks_kms *kms)
{
	return ks_err(-EBADMSG, "wrapped key does not authenticate under KMS "
	    "'%s' (altered, or bound to another tenant or version)",
	    kms->name);
}

static int
gcm_unwrap(struct ks_kms *kms, const struct p11_key *kk,
    const unsigned char *aad, size_t aadlen, const unsigned char *blob,
    struct cf_secbuf **key)
{
	struct p11_priv *p = kms->priv;
	struct cf_secbuf *tmp = NULL, *k = NULL;
	unsigned char iv[P11_IV];
	CK_MECHANISM m;
	CK_GCM_PARAMS gp;
	CK_ULONG outlen;
	CK_RV rv;
	int rc;

	/* The output may briefly need room for the tag as well. */
	rc = cf_secbuf_new(&tmp, CF_KS_KEY_BYTES + CF_KS_TAG_BYTES);
	if (rc < 0)
		goto out;
	memcpy(iv, blob, P11_IV);
	gcm_mech(&m, &gp, iv, aad, aadlen);
	rv = p->f->C_DecryptInit(p->sess, &m, kk->h);
	if (rv != CKR_OK) {
		rc = ks_err(-EIO, "KMS '%s' (pkcs11): C_DecryptInit with "
		    "CKM_AES_GCM failed (CKR 0x%lx)", kms->name,
		    (unsigned long)rv);
		goto out;
	}
	outlen = (CK_ULONG)cf_secbuf_len(tmp);
	rv = p->f->C_Decrypt(p->sess, (unsigned char *)(uintptr_t)(blob +
	    P11_IV), P11_BLOB - P11_IV, cf_secbuf_data(tmp), &outlen);
	if (rv != CKR_OK || outlen != CF_KS_KEY_BYTES) {
		/* Any failure of the data itself is an integrity failure. */
		if (rv != CKR_OK && rv_is_device(rv))
			rc = ks_err(-EIO, "KMS '%s' (pkcs11): C_Decrypt failed "
			    "(CKR 0x%lx)", kms->name, (unsigned long)rv);
		else
			rc = bad_auth(kms);
		goto out;
	}
	rc = cf_secbuf_new(&k, CF_KS_KEY_BYTES);
	if (rc < 0)
		goto out;
	memcpy(cf_secbuf_data(k), cf_secbuf_cdata(tmp), CF_KS_KEY_BYTES);
	*key = k;
	k = NULL;
	rc = 0;
out:
	cf_secbuf_free(tmp);
	cf_secbuf_free(k);
	return rc;
}

/*
 * alg 3: C_UnwrapKey into a session object that may be read (not
 * sensitive, extractable), read its value, destroy it, and check the MAC
 * before the key leaves this function.
 */
static int
kwp_unwrap(struct ks_kms *kms, const struct p11_key *kk,
    const unsigned char *hdr, const unsigned char *blob,
    struct cf_secbuf **key)
{
	struct p11_priv *p = kms->priv;
	struct cf_secbuf *k = NULL;
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE kt = CKK_AES;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_MECHANISM m = { CKM_AES_KEY_WRAP_PAD, NULL, 0 };
	CK_ATTRIBUTE t[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_KEY_TYPE, &kt, sizeof(kt) },
		{ CKA_TOKEN, &no, sizeof(no) },
		{ CKA_PRIVATE, &yes, sizeof(yes) },
		{ CKA_SENSITIVE, &no, sizeof(no) },
		{ CKA_EXTRACTABLE, &yes, sizeof(yes) },
	};
	CK_ATTRIBUTE v;
	CK_OBJECT_HANDLE h;
	CK_RV rv, drv;
	int rc;

	if (!kk->can_unwrap)
		return kwp_refused(kms, kk, "CKA_UNWRAP");
	rc = cf_secbuf_new(&k, CF_KS_KEY_BYTES);
	if (rc < 0)
		return rc;
	rv = p->f->C_UnwrapKey(p->sess, &m, kk->h, (unsigned char *)(uintptr_t)
	    blob, KS_KWP_WRAPPED_BYTES, t, sizeof(t) / sizeof(t[0]), &h);
	if (rv != CKR_OK) {
		if (rv_is_wrap_data(rv))
			rc = bad_auth(kms);
		else
			rc = ks_err(-EIO, "KMS '%s' (pkcs11): C_UnwrapKey with "
			    "CKM_AES_KEY_WRAP_PAD failed (CKR 0x%lx)%s",
			    kms->name, (unsigned long)rv,
			    rv == CKR_TEMPLATE_INCONSISTENT ||
			    rv == CKR_ATTRIBUTE_VALUE_INVALID ? "; the token "
			    "may refuse unwrapped keys that are readable "
			    "(CKA_SENSITIVE false)" : "");
		goto out;
	}
	v.type = CKA_VALUE;
	v.pValue = cf_secbuf_data(k);
	v.ulValueLen = CF_KS_KEY_BYTES;
	rv = p->f->C_GetAttributeValue(p->sess, h, &v, 1);
	drv = p->f->C_DestroyObject(p->sess, h);
	if (rv == CKR_BUFFER_TOO_SMALL || (rv == CKR_OK &&
	    v.ulValueLen != CF_KS_KEY_BYTES)) {
		/* Not a 32-byte key: nothing coffer wrapped. */
		rc = bad_auth(kms);
		goto out;
	}
	if (rv != CKR_OK || drv != CKR_OK) {
		rc = ks_err(-EIO, "KMS '%s' (pkcs11): cannot %s the unwrapped "
		    "session key (CKR 0x%lx)", kms->name, rv != CKR_OK ?
		    "read" : "destroy", (unsigned long)(rv != CKR_OK ? rv :
		    drv));
		goto out;
	}
	/* [KS-KWP-3] The MAC is checked before the key is used. */
	rc = ks_kwp_verify(cf_secbuf_cdata(k), hdr, blob);
	if (rc < 0) {
		rc = bad_auth(kms);
		goto out;
	}
	*key = k;
	k = NULL;
	rc = 0;
out:
	cf_secbuf_free(k);
	return rc;
}

static int
p11_unwrap(struct ks_kms *kms, const unsigned char *kek_id, uint8_t alg,
    const unsigned char *aad, size_t aadlen, const unsigned char *blob,
    size_t bloblen, struct cf_secbuf **key)
{
	struct p11_key kk;
	int rc;

	*key = NULL;
	if (!(alg == CF_KS_WRAP_AES256GCM && bloblen == P11_BLOB) &&
	    !(alg == CF_KS_WRAP_AES256KWP && bloblen == KS_KWP_BLOB_BYTES &&
	    aadlen == CF_KS_ENVELOPE_HEADER_BYTES))
		return ks_err(-EPROTO, "KMS '%s': wrapped key has algorithm "
		    "%u / %zu bytes, not what the pkcs11 KMS writes", kms->name,
		    alg, bloblen);
	rc = p11_ready(kms);
	if (rc < 0)
		return rc;
	rc = p11_find(kms, kek_id, &kk);
	if (rc < 0)
		return rc;
	if (alg == CF_KS_WRAP_AES256KWP)
		return kwp_unwrap(kms, &kk, aad, blob, key);
	return gcm_unwrap(kms, &kk, aad, aadlen, blob, key);
}

/* Generates KEK version maxv + 1 on the token and so makes it current. */
static int
p11_rotate(struct ks_kms *kms)
{
	struct p11_priv *p = kms->priv;
	struct p11_key k, nk;
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE kt = CKK_AES;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_ULONG vlen = CF_KS_KEY_BYTES;
	CK_MECHANISM m = { CKM_AES_KEY_GEN, NULL, 0 };
	CK_OBJECT_HANDLE h;
	unsigned char ckaid[CF_KS_ID_BYTES];
	char label[P11_LABEL_MAX + 1], hex[CF_KS_ID_BYTES * 2 + 1];
	unsigned long v;
	int gcm = p->alg == CF_KS_WRAP_AES256GCM;
	CK_RV rv;
	int rc;

	rc = p11_ready(kms);
	if (rc < 0)
		return rc;
	rc = p11_newest(kms, &k, &v);
	if (rc == -ENOENT)
		v = 0;
	else if (rc < 0)
		return rc;
	if (v == 0)
		snprintf(label, sizeof(label), "%s", p->key_label);
	else
		snprintf(label, sizeof(label), "%s.v%lu", p->key_label, v + 1);
	randombytes_buf(ckaid, sizeof(ckaid));
	{
		CK_ATTRIBUTE t[] = {
			{ CKA_CLASS, &cls, sizeof(cls) },
			{ CKA_KEY_TYPE, &kt, sizeof(kt) },
			{ CKA_VALUE_LEN, &vlen, sizeof(vlen) },
			{ CKA_TOKEN, &yes, sizeof(yes) },
			{ CKA_PRIVATE, &yes, sizeof(yes) },
			{ CKA_SENSITIVE, &yes, sizeof(yes) },
			{ CKA_EXTRACTABLE, &no, sizeof(no) },
			/* Only what the configured mechanism needs. */
			{ CKA_ENCRYPT, gcm ? &yes : &no, sizeof(yes) },
			{ CKA_DECRYPT, gcm ? &yes : &no, sizeof(yes) },
			{ CKA_WRAP, gcm ? &no : &yes, sizeof(yes) },
			{ CKA_UNWRAP, gcm ? &no : &yes, sizeof(yes) },
			{ CKA_SIGN, &no, sizeof(no) },
			{ CKA_VERIFY, &no, sizeof(no) },
			{ CKA_LABEL, label, strlen(label) },
			{ CKA_ID, ckaid, sizeof(ckaid) },
		};

		rv = p->f->C_GenerateKey(p->sess, &m, t, sizeof(t) /
		    sizeof(t[0]), &h);
	}
	if (rv != CKR_OK)
		return ks_err(-EIO, "KMS '%s' (pkcs11): cannot generate KEK "
		    "'%s' on token '%s' (CKR 0x%lx)", kms->name, label,
		    p->token, (unsigned long)rv);
	rc = p11_key_info(kms, h, &nk);
	if (rc < 0)
		return ks_err(rc, "KMS '%s' (pkcs11): cannot read the new "
		    "KEK's attributes", kms->name);
	ks_hex(hex, nk.id, CF_KS_ID_BYTES);
	{
		struct cf_ks_audit_field f[] = {
			{ "kms", kms->name, 0 },
			{ "kek", hex, 0 },
			{ "label", label, 0 },
		};

		return cf_ks_audit_append(kms->home, "kms.kek_created", f, 3);
	}
}

static int
p11_describe(struct ks_kms *kms, const unsigned char *kek_id, char *buf,
    size_t len)
{
	struct p11_priv *p = kms->priv;
	char hex[CF_KS_ID_BYTES * 2 + 1];

	/* No login: describing must work without the PIN. */
	ks_hex(hex, kek_id, CF_KS_ID_BYTES);
	snprintf(buf, len, "pkcs11 KMS '%s' (token '%s'), KEK %s", kms->name,
	    p->token, hex);
	return 0;
}

static int
p11_destroy(struct ks_kms *kms, const unsigned char *kek_id)
{
	struct p11_priv *p = kms->priv;
	struct p11_key k;
	CK_RV rv;
	int rc;

	rc = p11_ready(kms);
	if (rc < 0)
		return rc;
	rc = p11_find(kms, kek_id, &k);
	if (rc < 0)
		return rc;
	rv = p->f->C_DestroyObject(p->sess, k.h);
	if (rv != CKR_OK)
		return ks_err(-EIO, "KMS '%s' (pkcs11): C_DestroyObject failed "
		    "(CKR 0x%lx)", kms->name, (unsigned long)rv);
	return 0;
}

const struct ks_kms_ops ks_kms_pkcs11_ops = {
	.type = "pkcs11",
	.open = p11_open,
	.current = p11_current,
	.wrap = p11_wrap,
	.unwrap = p11_unwrap,
	.rotate = p11_rotate,
	.describe = p11_describe,
	.destroy = p11_destroy,
	.close = p11_close,
};
