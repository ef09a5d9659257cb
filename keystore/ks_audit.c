/*
 * ks_audit.c - the tamper-evident audit log (docs/format/audit.md).
 *
 * Every record is one JSON line whose last member is a keyed BLAKE2b-256
 * MAC over the exact bytes before it, and each record carries the MAC of
 * the one before it ("prev"), so editing, inserting, removing or
 * reordering a record breaks the chain.  A separate anchor file
 * (audit/head) holds the sequence number, log length and MAC of the last
 * record, MACed as well, so cutting records off the end is detected too.
 *
 * Appends are serialised across processes with flock(2) on the log and
 * made durable with fdatasync before the anchor is replaced.  An append
 * repairs what a crash can leave behind (an anchor one record behind, a
 * torn last line) and refuses to write anything if it finds real damage.
 *
 * What this file deliberately does not do: it keeps no per-tenant keys
 * (the whole home shares one audit key), it does not rotate or compress
 * logs, and nothing in a record is secret, so nothing is encrypted.  The
 * MAC proves the records were written by a holder of the audit key; it
 * cannot stop that holder, or anyone who deletes the log, the anchor and
 * the key together, from rewriting history.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "ks_int.h"

#define KS_AUDIT_LINE_MAX 4096		/* [KS-AUD-12], newline excluded */
#define KS_AUDIT_HEAD_MAX 512		/* [KS-AUD-22] */
#define KS_AUDIT_MAC_BYTES 32U
#define KS_AUDIT_HEX (2 * KS_AUDIT_MAC_BYTES)

#define KS_AUDIT_DIR "audit"
#define KS_AUDIT_LOG "audit/audit.log"
#define KS_AUDIT_HEAD "audit/head"
#define KS_AUDIT_KEY "audit/audit.key"

/* The domain strings; sizeof() counts the terminating 0x00 that is MACed. */
static const char audit_domain[] = "coffer-audit-v1";
static const char head_domain[] = "coffer-audit-head-v1";

/* ,"mac":"<64 hex>"} ends every record; ,"prev":"<64 hex>" precedes it. */
#define MAC_LEAD ",\"mac\":\""
#define MAC_LEAD_LEN (sizeof(MAC_LEAD) - 1)
#define MAC_SUFFIX_LEN (MAC_LEAD_LEN + KS_AUDIT_HEX + 2)
#define PREV_LEAD ",\"prev\":\""
#define PREV_LEAD_LEN (sizeof(PREV_LEAD) - 1)
#define PREV_LEN (PREV_LEAD_LEN + KS_AUDIT_HEX + 1)
#define SEQ_LEAD "{\"seq\":"
#define SEQ_LEAD_LEN (sizeof(SEQ_LEAD) - 1)
#define HMAC_LEAD ",\"hmac\":\""
#define HMAC_LEAD_LEN (sizeof(HMAC_LEAD) - 1)
#define HMAC_SUFFIX_LEN (HMAC_LEAD_LEN + KS_AUDIT_HEX + 2)

static const char *const reserved_keys[] = {
	"seq", "time", "actor", "event", "prev", "mac",
};

/* The anchor: where the log ended after the last completed append. */
struct audit_head {
	uint64_t seq;		/* 0: no record yet */
	uint64_t len;		/* log size in bytes after record seq */
	unsigned char mac[KS_AUDIT_MAC_BYTES];
};

/* ---- helpers --------------------------------------------------------- */

static int
is_lhex(const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') ||
		    (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return 1;
}

/*
 * 1 if the n bytes at p are the literal format text lit.  Both are public
 * structure (member names and punctuation), never a tag or a key, so a
 * plain memcmp is right here.
 */
static int
text_at(const char *p, const char *lit, size_t n)
{
	return memcmp(p, lit, n) == 0;	/* checksrc:allow public format text */
}

static int
key_char_ok(char c)
{
	return (c >= 'a' && c <= 'z') || c == '_';
}

/* 1 if k is [a-z_]+; reserved keys are checked separately. */
static int
key_syntax_ok(const char *k)
{
	size_t i;

	if (k == NULL || k[0] == '\0')
		return 0;
	for (i = 0; k[i] != '\0'; i++)
		if (!key_char_ok(k[i]))
			return 0;
	return 1;
}

static int
key_reserved(const char *k)
{
	size_t i;

	for (i = 0; i < sizeof(reserved_keys) / sizeof(reserved_keys[0]); i++)
		if (strcmp(k, reserved_keys[i]) == 0)
			return 1;
	return 0;
}

/*
 * Keyed BLAKE2b-256 over domain (with its 0x00) || buf.  [KS-AUD-8],
 * [KS-AUD-21].
 */
static int
audit_mac(unsigned char out[KS_AUDIT_MAC_BYTES], const unsigned char *key,
    const char *domain, size_t domlen, const void *buf, size_t len)
{
	crypto_generichash_state st;
	int rc = -EIO;

	if (crypto_generichash_init(&st, key, CF_KS_KEY_BYTES,
	    KS_AUDIT_MAC_BYTES) != 0)
		goto out;
	if (crypto_generichash_update(&st, (const unsigned char *)domain,
	    domlen) != 0)
		goto out;
	if (crypto_generichash_update(&st, buf, len) != 0)
		goto out;
	if (crypto_generichash_final(&st, out, KS_AUDIT_MAC_BYTES) != 0)
		goto out;
	rc = 0;
out:
	sodium_memzero(&st, sizeof(st));
	return rc;
}

static int
lock_fd(int fd, int op)
{
	while (flock(fd, op) != 0) {
		if (errno != EINTR)
			return -errno;
	}
	return 0;
}

static int
pread_all(int fd, void *buf, size_t len, off_t off)
{
	unsigned char *p = buf;
	ssize_t n;

	while (len > 0) {
		n = pread(fd, p, len, off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO;	/* the file shrank under us */
		p += n;
		len -= (size_t)n;
		off += n;
	}
	return 0;
}

/* ---- the audit key --------------------------------------------------- */

/*
 * The key file: audit/audit.key under the home, or [audit] key_file, which
 * must be absolute (openat ignores dirfd for it).  [KS-AUD-2]
 */
static int
key_path(struct cf_ks_home *home, const char **path)
{
	const char *p = cf_ks_config_get(home->cfg, "audit", "key_file");

	*path = KS_AUDIT_KEY;
	if (p == NULL || p[0] == '\0')
		return 0;
	if (p[0] != '/')
		return ks_err(-EINVAL, "[audit] key_file must be an absolute "
		    "path, not '%s'", p);
	*path = p;
	return 0;
}

/* Reads the key straight into locked memory; -ENOENT if it is missing. */
static int
key_read(int dirfd, const char *path, struct cf_secbuf **out)
{
	struct cf_secbuf *sb = NULL;
	size_t got = 0;
	int rc;

	*out = NULL;
	rc = cf_secbuf_new(&sb, CF_KS_KEY_BYTES);
	if (rc < 0)
		return rc;
	rc = ks_read_secret(dirfd, path, "audit key file", sb,
	    CF_KS_KEY_BYTES, &got);
	if (rc == -EFBIG || (rc == 0 && got != CF_KS_KEY_BYTES))
		rc = ks_err(-EPROTO, "audit key file %s must be a regular file "
		    "of exactly %u bytes", path, CF_KS_KEY_BYTES);
	if (rc < 0)
		goto out;
	cf_secbuf_readonly(sb);
	*out = sb;
	sb = NULL;
out:
	cf_secbuf_free(sb);
	return rc;
}

/*
 * Creates the key file crash-safely: the bytes go to a temporary file that
 * is fsynced and then hard-linked to the final name, so the name never
 * points at a short key, and a concurrent creator (linkat: EEXIST) wins
 * cleanly.  [KS-AUD-3]
 */
static int
key_create(int dirfd, const char *path, struct cf_secbuf **out)
{
	struct cf_secbuf *sb = NULL;
	char tmp[PATH_MAX];
	unsigned char rnd[8];
	char rhex[sizeof(rnd) * 2 + 1];
	const unsigned char *p;
	size_t done = 0;
	ssize_t n;
	int fd = -1, linked = 0, rc;

	*out = NULL;
	randombytes_buf(rnd, sizeof(rnd));
	ks_hex(rhex, rnd, sizeof(rnd));
	if (snprintf(tmp, sizeof(tmp), "%s.tmp-%s", path, rhex) >=
	    (int)sizeof(tmp))
		return ks_err(-ENAMETOOLONG, "audit key path too long");
	rc = cf_secbuf_random(&sb, CF_KS_KEY_BYTES);
	if (rc < 0)
		return rc;
	fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC |
	    O_NOFOLLOW, 0600);
	if (fd < 0) {
		rc = -errno;
		ks_err(rc, "cannot create audit key %s: %s", path,
		    strerror(-rc));
		goto out;
	}
	p = cf_secbuf_cdata(sb);
	while (done < CF_KS_KEY_BYTES) {
		n = write(fd, p + done, CF_KS_KEY_BYTES - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = -errno;
			ks_err(rc, "cannot write audit key %s: %s", path,
			    strerror(-rc));
			goto out;
		}
		done += (size_t)n;
	}
	if (fsync(fd) != 0) {
		rc = -errno;
		ks_err(rc, "cannot fsync audit key %s: %s", path,
		    strerror(-rc));
		goto out;
	}
	if (linkat(dirfd, tmp, dirfd, path, 0) != 0) {
		rc = -errno;
		if (rc == -EEXIST) {
			/* Someone else created it first: use theirs. */
			rc = key_read(dirfd, path, out);
			if (rc < 0)
				ks_err(rc, "cannot read audit key %s: %s",
				    path, strerror(-rc));
			goto out;
		}
		ks_err(rc, "cannot create audit key %s: %s", path,
		    strerror(-rc));
		goto out;
	}
	linked = 1;
	cf_secbuf_readonly(sb);
	*out = sb;
	sb = NULL;
	rc = 0;
out:
	if (fd >= 0) {
		close(fd);
		unlinkat(dirfd, tmp, 0);
	}
	if (linked) {
		/* The new name must survive a crash before any record does. */
		int frc = ks_fsync_parent(dirfd, path);

		if (frc < 0 && rc == 0) {
			cf_secbuf_free(*out);
			*out = NULL;
			rc = ks_err(frc, "cannot fsync the directory of %s: %s",
			    path, strerror(-frc));
		}
	}
	cf_secbuf_free(sb);
	sodium_memzero(rnd, sizeof(rnd));
	return rc;
}

/*
 * Loads (once) the audit key into home->audit_key.  create: the caller
 * found an empty log and no anchor, so a missing key may be created; in
 * any other state a missing key is an error, never silently replaced
 * (a new key would make every existing record fail).  [KS-AUD-4]
 */
static int
key_load(struct cf_ks_home *home, int create)
{
	struct cf_secbuf *sb = NULL;
	const char *path;
	int rc;

	if (home->audit_key != NULL)
		return 0;
	rc = key_path(home, &path);
	if (rc < 0)
		return rc;
	rc = key_read(home->dirfd, path, &sb);
	if (rc == -ENOENT && create)
		rc = key_create(home->dirfd, path, &sb);
	else if (rc == -ENOENT)
		return ks_err(rc, "audit key %s%s%s is missing but the audit "
		    "log or its anchor exists; restore the key from a backup",
		    path[0] == '/' ? "" : home->path,
		    path[0] == '/' ? "" : "/", path);
	else if (rc < 0 && rc != -EPROTO)
		ks_err(rc, "cannot read audit key %s: %s", path, strerror(-rc));
	if (rc < 0)
		return rc;
	home->audit_key = sb;
	return 0;
}

void
ks_audit_close(struct cf_ks_home *home)
{
	if (home == NULL)
		return;
	cf_secbuf_free(home->audit_key);
	home->audit_key = NULL;
}

/* ---- records --------------------------------------------------------- */

#define HAVE_SEQ 0x01
#define HAVE_TIME 0x02
#define HAVE_ACTOR 0x04
#define HAVE_EVENT 0x08
#define HAVE_PREV 0x10
#define HAVE_MAC 0x20
#define HAVE_ALL 0x3f

/* A JSON string holding exactly the 64 hex characters at hex. */
static int
hex_member_ok(const json_t *v, const char *hex)
{
	return json_is_string(v) && json_string_length(v) == KS_AUDIT_HEX &&
	    strncmp(json_string_value(v), hex, KS_AUDIT_HEX) == 0;
}

/*
 * Checks one member of a record against [KS-AUD-14] and notes which of
 * the required members it is.  prevp and macp point at the hex that the
 * byte layout check found, which the JSON values must repeat.
 */
static int
member_ok(const char *k, const json_t *v, const char *prevp, const char *macp,
    json_int_t *seq, int *have)
{
	if (strcmp(k, "seq") == 0) {
		*seq = json_integer_value(v);
		*have |= HAVE_SEQ;
		return json_is_integer(v) && *seq >= 1;
	}
	if (strcmp(k, "time") == 0) {
		*have |= HAVE_TIME;
		return json_is_string(v);
	}
	if (strcmp(k, "actor") == 0) {
		*have |= HAVE_ACTOR;
		return json_is_string(v);
	}
	if (strcmp(k, "event") == 0) {
		*have |= HAVE_EVENT;
		return json_is_string(v);
	}
	if (strcmp(k, "prev") == 0) {
		*have |= HAVE_PREV;
		return hex_member_ok(v, prevp);
	}
	if (strcmp(k, "mac") == 0) {
		*have |= HAVE_MAC;
		return hex_member_ok(v, macp);
	}
	/* [KS-AUD-6] any other field: [a-z_]+, a string or an integer. */
	return key_syntax_ok(k) && (json_is_string(v) || json_is_integer(v));
}

int
cf_ks_audit_parse_line(const unsigned char *key, const char *line, size_t len,
    uint64_t *seq, unsigned char prev_mac[32], unsigned char mac[32])
{
	unsigned char want[KS_AUDIT_MAC_BYTES];
	unsigned char got[KS_AUDIT_MAC_BYTES];
	unsigned char prev[KS_AUDIT_MAC_BYTES];
	char hex[KS_AUDIT_HEX + 1];
	json_error_t jerr;
	json_t *obj = NULL, *v;
	const char *k, *macp, *prevp;
	json_int_t s = 0;
	size_t body;
	int have = 0, rc = -EPROTO;

	*seq = 0;
	memset(prev_mac, 0, KS_AUDIT_MAC_BYTES);
	memset(mac, 0, KS_AUDIT_MAC_BYTES);
	if (key == NULL || (line == NULL && len != 0))
		cf_misuse("cf_ks_audit_parse_line: NULL key or line");

	/* [KS-AUD-12] bounded before anything else looks at the bytes. */
	if (len == 0 || len > KS_AUDIT_LINE_MAX) {
		rc = ks_err(-EPROTO, "audit line: empty or longer than %d "
		    "bytes", KS_AUDIT_LINE_MAX);
		goto out;
	}
	/*
	 * [KS-AUD-13] Byte layout first: {"seq": ... ,"prev":"<hex>",
	 * "mac":"<hex>"} with nothing after the final brace.  Together with
	 * a successful strict JSON parse this proves "mac" is the last member
	 * and "prev" the one before it: the quotes around each hex string
	 * follow ':' and precede ',' or '}', so none of them can be escaped.
	 */
	if (len < SEQ_LEAD_LEN + PREV_LEN + MAC_SUFFIX_LEN + 1 ||
	    !text_at(line, SEQ_LEAD, SEQ_LEAD_LEN)) {
		rc = ks_err(-EPROTO, "audit line: too short, or does not "
		    "start with {\"seq\":");
		goto out;
	}
	body = len - MAC_SUFFIX_LEN;
	macp = line + body + MAC_LEAD_LEN;
	if (!text_at(line + body, MAC_LEAD, MAC_LEAD_LEN) ||
	    !is_lhex(macp, KS_AUDIT_HEX) || line[len - 2] != '"' ||
	    line[len - 1] != '}') {
		rc = ks_err(-EPROTO, "audit line: does not end with "
		    ",\"mac\":\"<64 lowercase hex>\"}");
		goto out;
	}
	prevp = line + body - PREV_LEN + PREV_LEAD_LEN;
	if (!text_at(line + body - PREV_LEN, PREV_LEAD, PREV_LEAD_LEN) ||
	    !is_lhex(prevp, KS_AUDIT_HEX) || line[body - 1] != '"') {
		rc = ks_err(-EPROTO, "audit line: \"prev\" (64 lowercase hex) "
		    "does not come just before \"mac\"");
		goto out;
	}

	/* [KS-AUD-14] Strict JSON: one object, no duplicate keys, no NUL. */
	obj = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
	if (obj == NULL || !json_is_object(obj)) {
		rc = ks_err(-EPROTO, "audit line: not a JSON object (column "
		    "%d)", obj == NULL ? jerr.column : 0);
		goto out;
	}
	json_object_foreach(obj, k, v) {
		if (!member_ok(k, v, prevp, macp, &s, &have)) {
			/* The key is not quoted: it could hold escapes. */
			rc = ks_err(-EPROTO, "audit line: a member has a bad "
			    "key or value");
			goto out;
		}
	}
	if (have != HAVE_ALL) {
		rc = ks_err(-EPROTO, "audit line: a required member (seq, "
		    "time, actor, event, prev, mac) is missing");
		goto out;
	}

	memcpy(hex, prevp, KS_AUDIT_HEX);
	hex[KS_AUDIT_HEX] = '\0';
	if (ks_unhex(prev, KS_AUDIT_MAC_BYTES, hex) < 0)
		goto out;
	memcpy(hex, macp, KS_AUDIT_HEX);
	hex[KS_AUDIT_HEX] = '\0';
	if (ks_unhex(got, KS_AUDIT_MAC_BYTES, hex) < 0)
		goto out;

	/* [KS-AUD-8] The MAC covers every byte before ,"mac":" */
	rc = audit_mac(want, key, audit_domain, sizeof(audit_domain), line,
	    body);
	if (rc < 0)
		goto out;
	if (crypto_verify_32(want, got) != 0) {
		rc = ks_err(-EBADMSG, "audit record %lld: MAC mismatch",
		    (long long)s);
		goto out;
	}
	*seq = (uint64_t)s;
	memcpy(prev_mac, prev, KS_AUDIT_MAC_BYTES);
	memcpy(mac, got, KS_AUDIT_MAC_BYTES);
	rc = 0;
out:
	json_decref(obj);
	sodium_memzero(want, sizeof(want));
	return rc;
}

/* ---- building a record ----------------------------------------------- */

struct linebuf {
	char *p;
	size_t len;
	size_t cap;
	int overflow;
};

static void
lb_add(struct linebuf *b, const char *s, size_t n)
{
	if (b->overflow || n > b->cap - b->len) {
		b->overflow = 1;
		return;
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
}

static void lb_fmt(struct linebuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
lb_fmt(struct linebuf *b, const char *fmt, ...)
{
	char tmp[128];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	assert(n >= 0 && (size_t)n < sizeof(tmp));
	lb_add(b, tmp, (size_t)n);
}

/* Appends s as a JSON string, escaped by jansson.  [KS-AUD-7] */
static int
lb_str(struct linebuf *b, const char *what, const char *s)
{
	json_t *j;
	char *q;

	j = json_string(s);
	if (j == NULL)
		return ks_err(-EINVAL, "audit %s is not valid UTF-8", what);
	q = json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT);
	json_decref(j);
	if (q == NULL)
		return -ENOMEM;
	lb_add(b, q, strlen(q));
	free(q);
	return 0;
}

static int
fields_check(const char *event, const struct cf_ks_audit_field *fields,
    size_t nfields)
{
	size_t i, j;

	if (event == NULL || event[0] == '\0')
		return ks_err(-EINVAL, "audit record without an event name");
	if (nfields > 0 && fields == NULL)
		cf_misuse("cf_ks_audit_append: NULL fields");
	for (i = 0; i < nfields; i++) {
		if (!key_syntax_ok(fields[i].key))
			return ks_err(-EINVAL, "audit field key '%.32s' is not "
			    "[a-z_]+", fields[i].key != NULL ?
			    fields[i].key : "(null)");
		if (key_reserved(fields[i].key))
			return ks_err(-EINVAL, "audit field key '%s' is "
			    "reserved", fields[i].key);
		for (j = 0; j < i; j++)
			if (strcmp(fields[i].key, fields[j].key) == 0)
				return ks_err(-EINVAL, "audit field key '%s' "
				    "appears twice", fields[i].key);
	}
	return 0;
}

/*
 * Builds record seq into line (cap bytes, newline included) and its MAC.
 * [KS-AUD-5] member order: seq, time, actor, event, fields..., prev, mac.
 */
static int
record_build(struct cf_ks_home *home, uint64_t seq,
    const unsigned char prev[KS_AUDIT_MAC_BYTES], const char *event,
    const struct cf_ks_audit_field *fields, size_t nfields, char *line,
    size_t cap, size_t *len, unsigned char mac[KS_AUDIT_MAC_BYTES])
{
	struct linebuf b = { line, 0, cap, 0 };
	char hex[KS_AUDIT_HEX + 1];
	char when[32];
	size_t i;
	int rc;

	*len = 0;
	cf_ks_time_format(cf_ks_now(), when, sizeof(when));
	lb_fmt(&b, "{\"seq\":%llu,\"time\":", (unsigned long long)seq);
	rc = lb_str(&b, "time", when);
	if (rc < 0)
		return rc;
	lb_add(&b, ",\"actor\":", 9);
	rc = lb_str(&b, "actor", home->actor);
	if (rc < 0)
		return rc;
	lb_add(&b, ",\"event\":", 9);
	rc = lb_str(&b, "event name", event);
	if (rc < 0)
		return rc;
	for (i = 0; i < nfields; i++) {
		lb_add(&b, ",\"", 2);
		lb_add(&b, fields[i].key, strlen(fields[i].key));
		lb_add(&b, "\":", 2);
		if (fields[i].str != NULL) {
			rc = lb_str(&b, "field value", fields[i].str);
			if (rc < 0)
				return rc;
		} else {
			lb_fmt(&b, "%lld", fields[i].num);
		}
	}
	ks_hex(hex, prev, KS_AUDIT_MAC_BYTES);
	lb_add(&b, PREV_LEAD, PREV_LEAD_LEN);
	lb_add(&b, hex, KS_AUDIT_HEX);
	lb_add(&b, "\"", 1);
	if (b.overflow || b.len + MAC_SUFFIX_LEN > KS_AUDIT_LINE_MAX)
		return ks_err(-EINVAL, "audit record '%.64s' would be longer "
		    "than %d bytes", event, KS_AUDIT_LINE_MAX);
	rc = audit_mac(mac, cf_secbuf_cdata(home->audit_key), audit_domain,
	    sizeof(audit_domain), line, b.len);
	if (rc < 0)
		return rc;
	ks_hex(hex, mac, KS_AUDIT_MAC_BYTES);
	lb_add(&b, MAC_LEAD, MAC_LEAD_LEN);
	lb_add(&b, hex, KS_AUDIT_HEX);
	lb_add(&b, "\"}\n", 3);
	assert(!b.overflow);
	*len = b.len;
	return 0;
}

/* ---- the anchor ------------------------------------------------------ */

/* Writes the canonical anchor bytes before ,"hmac":" into buf. */
static size_t
head_body(const struct audit_head *h, char *buf, size_t cap)
{
	char hex[KS_AUDIT_HEX + 1];
	int n;

	ks_hex(hex, h->mac, KS_AUDIT_MAC_BYTES);
	n = snprintf(buf, cap, "{\"seq\":%llu,\"len\":%llu,\"mac\":\"%s\"",
	    (unsigned long long)h->seq, (unsigned long long)h->len, hex);
	assert(n > 0 && (size_t)n < cap);
	return (size_t)n;
}

/*
 * Parses and authenticates audit/head.  [KS-AUD-20], [KS-AUD-21]
 * -EPROTO malformed, -EBADMSG hmac mismatch.
 */
static int
head_parse(const unsigned char *key, const char *buf, size_t len,
    struct audit_head *h)
{
	static const unsigned char zero[KS_AUDIT_MAC_BYTES];
	unsigned char want[KS_AUDIT_MAC_BYTES], got[KS_AUDIT_MAC_BYTES];
	char canon[KS_AUDIT_HEAD_MAX];
	char hex[KS_AUDIT_HEX + 1];
	json_error_t jerr;
	json_t *obj = NULL, *js, *jl, *jm, *jh;
	size_t body, clen;
	int rc = -EPROTO;

	memset(h, 0, sizeof(*h));
	if (len < 2 || len > KS_AUDIT_HEAD_MAX || buf[len - 1] != '\n')
		goto out;
	len--;
	if (len < HMAC_SUFFIX_LEN + 1)
		goto out;
	body = len - HMAC_SUFFIX_LEN;
	if (!text_at(buf + body, HMAC_LEAD, HMAC_LEAD_LEN) ||
	    !is_lhex(buf + body + HMAC_LEAD_LEN, KS_AUDIT_HEX) ||
	    buf[len - 2] != '"' || buf[len - 1] != '}')
		goto out;
	obj = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	if (obj == NULL || !json_is_object(obj) || json_object_size(obj) != 4)
		goto out;
	js = json_object_get(obj, "seq");
	jl = json_object_get(obj, "len");
	jm = json_object_get(obj, "mac");
	jh = json_object_get(obj, "hmac");
	if (!json_is_integer(js) || json_integer_value(js) < 0 ||
	    !json_is_integer(jl) || json_integer_value(jl) < 0 ||
	    !json_is_string(jm) || !json_is_string(jh) ||
	    json_string_length(jm) != KS_AUDIT_HEX)
		goto out;
	h->seq = (uint64_t)json_integer_value(js);
	h->len = (uint64_t)json_integer_value(jl);
	if (ks_unhex(h->mac, KS_AUDIT_MAC_BYTES, json_string_value(jm)) < 0)
		goto out;
	/* Exactly the bytes we would write: no other spelling is accepted. */
	clen = head_body(h, canon, sizeof(canon));
	if (clen != body || sodium_memcmp(canon, buf, body) != 0)
		goto out;
	/* [KS-AUD-23] seq 0 is the empty log. */
	if (h->seq == 0 && (h->len != 0 ||
	    sodium_memcmp(h->mac, zero, KS_AUDIT_MAC_BYTES) != 0))
		goto out;
	memcpy(hex, buf + body + HMAC_LEAD_LEN, KS_AUDIT_HEX);
	hex[KS_AUDIT_HEX] = '\0';
	if (ks_unhex(got, KS_AUDIT_MAC_BYTES, hex) < 0)
		goto out;
	rc = audit_mac(want, key, head_domain, sizeof(head_domain), buf, body);
	if (rc < 0)
		goto out;
	rc = crypto_verify_32(want, got) == 0 ? 0 : -EBADMSG;
out:
	if (rc == -EPROTO)
		memset(h, 0, sizeof(*h));
	json_decref(obj);
	sodium_memzero(want, sizeof(want));
	return rc;
}

/* Reads audit/head; -ENOENT if absent (no message set). */
static int
head_read(struct cf_ks_home *home, unsigned char **buf, size_t *len)
{
	int rc;

	rc = ks_read_file(home->dirfd, KS_AUDIT_HEAD, KS_AUDIT_HEAD_MAX, buf,
	    len);
	if (rc == -EFBIG)
		rc = -EPROTO;	/* oversize is malformed, like any bad head */
	else if (rc < 0 && rc != -ENOENT)
		ks_err(rc, "cannot read %s/%s: %s", home->path, KS_AUDIT_HEAD,
		    strerror(-rc));
	return rc;
}

static int
head_write(struct cf_ks_home *home, const struct audit_head *h)
{
	unsigned char hm[KS_AUDIT_MAC_BYTES];
	char buf[KS_AUDIT_HEAD_MAX];
	char hex[KS_AUDIT_HEX + 1];
	size_t n;
	int rc;

	n = head_body(h, buf, sizeof(buf));
	rc = audit_mac(hm, cf_secbuf_cdata(home->audit_key), head_domain,
	    sizeof(head_domain), buf, n);
	if (rc < 0)
		goto out;
	ks_hex(hex, hm, KS_AUDIT_MAC_BYTES);
	n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s%s\"}\n",
	    HMAC_LEAD, hex);
	assert(n < sizeof(buf));
	rc = ks_write_file_atomic(home->dirfd, KS_AUDIT_HEAD, buf, n, 0600);
	if (rc < 0)
		ks_err(rc, "cannot write %s/%s: %s", home->path, KS_AUDIT_HEAD,
		    strerror(-rc));
out:
	sodium_memzero(hm, sizeof(hm));
	return rc;
}

/* ---- reading lines --------------------------------------------------- */

enum {
	LINE_EOF = 0,
	LINE_OK = 1,		/* a complete line; '\n' replaced by NUL */
	LINE_PARTIAL = 2,	/* bytes at the end with no '\n' */
	LINE_LONG = 3,		/* longer than KS_AUDIT_LINE_MAX; skipped */
};

/*
 * Streams the lines of a file in bounded memory, from offset off up to
 * limit (the size seen when the reader was set up, so a log growing under
 * a lock-free reader does not keep it going).
 */
struct line_reader {
	int fd;
	off_t off;		/* file offset of buf[0] */
	off_t limit;
	size_t start, end;	/* unread bytes are buf[start..end) */
	int eof;
	int skipping;		/* inside an over-long line */
	char buf[KS_AUDIT_LINE_MAX + 2];
};

static void
reader_init(struct line_reader *r, int fd, off_t off, off_t limit)
{
	r->fd = fd;
	r->off = off;
	r->limit = limit;
	r->start = r->end = 0;
	r->eof = off >= limit;
	r->skipping = 0;
}

/*
 * Returns a LINE_* value or -errno; *line (NUL-terminated), *len (no
 * newline) and *lineoff (its file offset) describe the line.
 */
static int
reader_next(struct line_reader *r, char **line, size_t *len, off_t *lineoff)
{
	char *nl;
	size_t room;
	ssize_t n;

	*line = NULL;
	*len = 0;
	*lineoff = r->off + (off_t)r->start;
	for (;;) {
		nl = memchr(r->buf + r->start, '\n', r->end - r->start);
		if (nl != NULL && r->skipping) {
			r->skipping = 0;
			r->start = (size_t)(nl - r->buf) + 1;
			continue;
		}
		if (nl != NULL) {
			*nl = '\0';
			*line = r->buf + r->start;
			*len = (size_t)(nl - *line);
			*lineoff = r->off + (off_t)r->start;
			r->start = (size_t)(nl - r->buf) + 1;
			return LINE_OK;
		}
		if (r->skipping) {
			r->start = r->end;
		} else if (r->end - r->start > KS_AUDIT_LINE_MAX) {
			*lineoff = r->off + (off_t)r->start;
			r->skipping = 1;
			r->start = r->end;
			return LINE_LONG;
		}
		if (r->eof) {
			if (r->start == r->end)
				return LINE_EOF;
			r->buf[r->end] = '\0';
			*line = r->buf + r->start;
			*len = r->end - r->start;
			*lineoff = r->off + (off_t)r->start;
			r->start = r->end;
			return LINE_PARTIAL;
		}
		memmove(r->buf, r->buf + r->start, r->end - r->start);
		r->off += (off_t)r->start;
		r->end -= r->start;
		r->start = 0;
		/* Keep one byte for the NUL of a partial line. */
		room = sizeof(r->buf) - 1 - r->end;
		if ((off_t)room > r->limit - (r->off + (off_t)r->end))
			room = (size_t)(r->limit - (r->off + (off_t)r->end));
		if (room == 0) {
			r->eof = 1;
			continue;
		}
		n = pread(r->fd, r->buf + r->end, room, r->off + (off_t)r->end);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			r->eof = 1;
		r->end += (size_t)n;
	}
}

/*
 * Reads the complete line that ends, with its newline, at offset end.
 * buf has KS_AUDIT_LINE_MAX + 2 bytes.  -EPROTO if there is no such line.
 */
static int
read_line_before(int fd, off_t end, char *buf, size_t *len)
{
	size_t want, i, start;
	int rc;

	*len = 0;
	want = KS_AUDIT_LINE_MAX + 2;
	if ((off_t)want > end)
		want = (size_t)end;
	if (want < 2)
		return -EPROTO;
	rc = pread_all(fd, buf, want, end - (off_t)want);
	if (rc < 0)
		return rc;
	if (buf[want - 1] != '\n')
		return -EPROTO;
	for (i = want - 1; i > 0; i--)
		if (buf[i - 1] == '\n')
			break;
	if (i == 0 && (off_t)want != end)
		return -EPROTO;		/* longer than any valid line */
	start = i;
	*len = want - 1 - start;
	memmove(buf, buf + start, *len);
	buf[*len] = '\0';
	return 0;
}

/* ---- append ---------------------------------------------------------- */

/*
 * Establishes where the next record goes: checks the record the anchor
 * names, accepts complete chained records after it (an append that
 * crashed before its anchor update) and cuts off a torn last line (an
 * append that crashed mid-write).  [KS-AUD-30] .. [KS-AUD-33]
 * On success *last describes the last record and the log's end.
 */
static int
append_recover(struct cf_ks_home *home, int fd, off_t size,
    struct audit_head *last)
{
	const unsigned char *key = cf_secbuf_cdata(home->audit_key);
	unsigned char prev[KS_AUDIT_MAC_BYTES], mac[KS_AUDIT_MAC_BYTES];
	struct line_reader *r = NULL;
	char *line;
	size_t len;
	off_t lineoff;
	uint64_t seq;
	int rc, st;

	if ((uint64_t)size < last->len)
		return ks_err(-EBADMSG, "audit log is shorter than its anchor "
		    "(records removed?); run 'coffer audit verify'");
	r = malloc(sizeof(*r));
	if (r == NULL)
		return -ENOMEM;
	if (last->seq > 0) {
		rc = read_line_before(fd, (off_t)last->len, r->buf, &len);
		if (rc < 0 && rc != -EPROTO) {
			ks_err(rc, "cannot read %s/%s: %s", home->path,
			    KS_AUDIT_LOG, strerror(-rc));
			goto out;
		}
		if (rc == 0)
			rc = cf_ks_audit_parse_line(key, r->buf, len, &seq,
			    prev, mac);
		if (rc < 0 || seq != last->seq ||
		    crypto_verify_32(mac, last->mac) != 0) {
			rc = ks_err(-EBADMSG, "audit log does not match its "
			    "anchor at record %llu (records removed or "
			    "edited?); run 'coffer audit verify'",
			    (unsigned long long)last->seq);
			goto out;
		}
	}
	reader_init(r, fd, (off_t)last->len, size);
	for (;;) {
		st = reader_next(r, &line, &len, &lineoff);
		if (st < 0) {
			rc = ks_err(st, "cannot read %s/%s: %s", home->path,
			    KS_AUDIT_LOG, strerror(-st));
			goto out;
		}
		if (st == LINE_EOF)
			break;
		if (st == LINE_PARTIAL) {
			/* A torn write: it was never acknowledged. */
			assert((uint64_t)lineoff == last->len);
			if (ftruncate(fd, lineoff) != 0) {
				rc = -errno;
				ks_err(rc, "cannot cut the incomplete last "
				    "line off %s/%s: %s", home->path,
				    KS_AUDIT_LOG, strerror(-rc));
				goto out;
			}
			break;
		}
		rc = st == LINE_OK ? cf_ks_audit_parse_line(key, line, len,
		    &seq, prev, mac) : -EPROTO;
		if (rc < 0 || seq != last->seq + 1 ||
		    crypto_verify_32(prev, last->mac) != 0) {
			rc = ks_err(-EBADMSG, "audit log has a damaged record "
			    "after its anchor (record %llu); run 'coffer "
			    "audit verify'", (unsigned long long)last->seq + 1);
			goto out;
		}
		last->seq = seq;
		memcpy(last->mac, mac, KS_AUDIT_MAC_BYTES);
		last->len = (uint64_t)lineoff + len + 1;
	}
	rc = 0;
out:
	free(r);
	return rc;
}

int
cf_ks_audit_append(struct cf_ks_home *home, const char *event,
    const struct cf_ks_audit_field *fields, size_t nfields)
{
	struct audit_head last;
	unsigned char mac[KS_AUDIT_MAC_BYTES];
	unsigned char *hbuf = NULL;
	char *line = NULL;
	size_t hlen = 0, len;
	struct stat st;
	ssize_t n;
	int fd = -1, have_head, rc;

	memset(&last, 0, sizeof(last));
	rc = fields_check(event, fields, nfields);
	if (rc < 0)
		goto out;
	rc = ks_mkdirs(home->dirfd, KS_AUDIT_DIR, 0700);
	if (rc < 0) {
		ks_err(rc, "cannot create %s/%s: %s", home->path, KS_AUDIT_DIR,
		    strerror(-rc));
		goto out;
	}
	/* [KS-AUD-1] */
	fd = ks_openat(home->dirfd, KS_AUDIT_LOG, O_RDWR | O_APPEND | O_CREAT,
	    0600);
	if (fd < 0) {
		rc = fd;
		fd = -1;
		/* ks_openat explains a symlink or a FIFO itself. */
		if (rc != -ELOOP && rc != -EINVAL)
			ks_err(rc, "cannot open %s/%s: %s", home->path,
			    KS_AUDIT_LOG, strerror(-rc));
		goto out;
	}
	/* [KS-AUD-30] Held until close: protects the log and audit/head. */
	rc = lock_fd(fd, LOCK_EX);
	if (rc < 0) {
		ks_err(rc, "cannot lock %s/%s: %s", home->path, KS_AUDIT_LOG,
		    strerror(-rc));
		goto out;
	}
	if (fstat(fd, &st) != 0) {
		rc = -errno;
		goto out;
	}
	rc = head_read(home, &hbuf, &hlen);
	if (rc < 0 && rc != -ENOENT && rc != -EPROTO)
		goto out;
	have_head = rc != -ENOENT;
	if (!have_head && st.st_size > 0) {
		rc = ks_err(-EBADMSG, "audit anchor %s/%s is missing but the "
		    "log has records; run 'coffer audit verify'", home->path,
		    KS_AUDIT_HEAD);
		goto out;
	}
	rc = key_load(home, !have_head && st.st_size == 0);
	if (rc < 0)
		goto out;
	if (have_head) {
		rc = hbuf == NULL ? -EPROTO : head_parse(
		    cf_secbuf_cdata(home->audit_key), (const char *)hbuf,
		    hlen, &last);
		if (rc < 0) {
			rc = ks_err(-EBADMSG, "audit anchor %s/%s is damaged "
			    "(%s); run 'coffer audit verify'", home->path,
			    KS_AUDIT_HEAD, rc == -EBADMSG ? "MAC mismatch" :
			    "malformed");
			goto out;
		}
	} else {
		/*
		 * [KS-AUD-23] Anchor the empty log before the first record,
		 * so that a crash right after the first write leaves an
		 * anchor that is merely behind, never a missing one.
		 */
		rc = head_write(home, &last);
		if (rc < 0)
			goto out;
	}
	rc = append_recover(home, fd, st.st_size, &last);
	if (rc < 0)
		goto out;
	if (last.seq >= (uint64_t)INT64_MAX) {
		rc = ks_err(-EOVERFLOW, "audit log sequence exhausted");
		goto out;
	}
	line = malloc(KS_AUDIT_LINE_MAX + 1);
	if (line == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	rc = record_build(home, last.seq + 1, last.mac, event, fields,
	    nfields, line, KS_AUDIT_LINE_MAX + 1, &len, mac);
	if (rc < 0)
		goto out;
	/* [KS-AUD-31] One write() per record, so readers never interleave. */
	do {
		n = write(fd, line, len);
	} while (n < 0 && errno == EINTR);
	if (n < 0 || (size_t)n != len) {
		rc = n < 0 ? -errno : -EIO;
		if (n > 0 && ftruncate(fd, (off_t)last.len) != 0) {
			/* Left in place: the next append cuts it off. */
		}
		ks_err(rc, "cannot write to %s/%s: %s", home->path,
		    KS_AUDIT_LOG, strerror(-rc));
		goto out;
	}
	if (fdatasync(fd) != 0) {
		rc = -errno;
		ks_err(rc, "cannot sync %s/%s: %s", home->path, KS_AUDIT_LOG,
		    strerror(-rc));
		goto out;
	}
	last.seq++;
	last.len += len;
	memcpy(last.mac, mac, KS_AUDIT_MAC_BYTES);
	rc = head_write(home, &last);
	if (rc < 0) {
		ks_err(rc, "audit record %llu was written but the anchor was "
		    "not updated (%s); the next append repairs it",
		    (unsigned long long)last.seq, strerror(-rc));
		goto out;
	}
	rc = 0;
out:
	if (fd >= 0)
		close(fd);	/* releases the lock */
	free(hbuf);
	free(line);
	return rc;
}

/* ---- verify ---------------------------------------------------------- */

static int damage(struct cf_ks_audit_report *rep, uint64_t bad_seq,
    const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int
damage(struct cf_ks_audit_report *rep, uint64_t bad_seq, const char *fmt, ...)
{
	va_list ap;

	rep->bad_seq = bad_seq;
	va_start(ap, fmt);
	vsnprintf(rep->problem, sizeof(rep->problem), fmt, ap);
	va_end(ap);
	return ks_err(-EBADMSG, "audit log damaged: %s", rep->problem);
}

int
cf_ks_audit_verify(struct cf_ks_home *home, struct cf_ks_audit_report *rep)
{
	static const unsigned char zero[KS_AUDIT_MAC_BYTES];
	unsigned char last[KS_AUDIT_MAC_BYTES];
	unsigned char prev[KS_AUDIT_MAC_BYTES], mac[KS_AUDIT_MAC_BYTES];
	struct line_reader *r = NULL;
	struct audit_head head;
	unsigned char *hbuf = NULL;
	const unsigned char *key;
	size_t hlen = 0, len;
	struct stat st;
	uint64_t expect = 1, seq;
	off_t lineoff;
	char *line;
	int fd = -1, hrc, anchor_ok = 0, rc, ln;

	memset(rep, 0, sizeof(*rep));
	memset(&head, 0, sizeof(head));
	memcpy(last, zero, sizeof(last));
	fd = ks_openat(home->dirfd, KS_AUDIT_LOG, O_RDONLY, 0);
	if (fd < 0) {
		rc = fd;
		fd = -1;
		if (rc != -ENOENT) {
			if (rc != -ELOOP && rc != -EINVAL)
				ks_err(rc, "cannot open %s/%s: %s", home->path,
				    KS_AUDIT_LOG, strerror(-rc));
			goto out;
		}
	}
	/* [KS-AUD-40] A shared lock sees the log and anchor in step. */
	if (fd >= 0) {
		rc = lock_fd(fd, LOCK_SH);
		if (rc < 0) {
			ks_err(rc, "cannot lock %s/%s: %s", home->path,
			    KS_AUDIT_LOG, strerror(-rc));
			goto out;
		}
		if (fstat(fd, &st) != 0) {
			rc = -errno;
			goto out;
		}
	} else {
		st.st_size = 0;
	}
	hrc = head_read(home, &hbuf, &hlen);
	if (hrc < 0 && hrc != -ENOENT && hrc != -EPROTO) {
		rc = hrc;
		goto out;
	}
	/* [KS-AUD-41] No log (or an empty one) and no anchor: nothing yet. */
	if (hrc == -ENOENT && st.st_size == 0) {
		rc = 0;
		goto out;
	}
	rc = key_load(home, 0);
	if (rc < 0) {
		snprintf(rep->problem, sizeof(rep->problem), "%s",
		    cf_ks_last_error());
		goto out;
	}
	key = cf_secbuf_cdata(home->audit_key);
	if (hrc == 0)
		hrc = head_parse(key, (const char *)hbuf, hlen, &head);

	r = malloc(sizeof(*r));
	if (r == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	reader_init(r, fd, 0, st.st_size);
	for (;;) {
		ln = fd >= 0 ? reader_next(r, &line, &len, &lineoff) : LINE_EOF;
		if (ln < 0) {
			rc = ks_err(ln, "cannot read %s/%s: %s", home->path,
			    KS_AUDIT_LOG, strerror(-ln));
			goto out;
		}
		if (ln == LINE_EOF)
			break;
		if (ln == LINE_LONG) {
			rc = damage(rep, expect, "record %llu: line longer "
			    "than %d bytes (malformed)",
			    (unsigned long long)expect, KS_AUDIT_LINE_MAX);
			goto out;
		}
		if (ln == LINE_PARTIAL) {
			rc = damage(rep, expect, "record %llu: incomplete last "
			    "line (%s)", (unsigned long long)expect,
			    hrc == 0 && (uint64_t)lineoff >= head.len ?
			    "interrupted append; the next append removes it" :
			    "truncated");
			goto out;
		}
		rc = cf_ks_audit_parse_line(key, line, len, &seq, prev, mac);
		if (rc == -EPROTO) {
			rc = damage(rep, expect, "record %llu: malformed line "
			    "(not an audit record)",
			    (unsigned long long)expect);
			goto out;
		}
		if (rc == -EBADMSG) {
			rc = damage(rep, expect, "record %llu: MAC mismatch "
			    "(record edited%s)", (unsigned long long)expect,
			    expect == 1 ? ", or wrong audit key" : "");
			goto out;
		}
		if (rc < 0)
			goto out;
		if (seq != expect) {
			rc = damage(rep, expect, "record %llu: expected seq "
			    "%llu, found %llu (record %s)",
			    (unsigned long long)expect,
			    (unsigned long long)expect,
			    (unsigned long long)seq, seq > expect ?
			    "removed or reordered" :
			    "duplicated, inserted or reordered");
			goto out;
		}
		if (crypto_verify_32(prev, last) != 0) {
			rc = damage(rep, expect, "record %llu: prev does not "
			    "match record %llu (record inserted, removed or "
			    "reordered)", (unsigned long long)expect,
			    (unsigned long long)expect - 1);
			goto out;
		}
		if (hrc == 0 && seq == head.seq)
			anchor_ok = crypto_verify_32(mac, head.mac) == 0 &&
			    (uint64_t)lineoff + len + 1 == head.len;
		memcpy(last, mac, sizeof(last));
		rep->records++;
		expect++;
	}

	/* [KS-AUD-42] The anchor, once every record checked out. */
	if (hrc == -ENOENT) {
		rc = damage(rep, 0, "anchor missing (%s deleted?) but the log "
		    "has records", KS_AUDIT_HEAD);
		goto out;
	}
	if (hrc == -EPROTO) {
		rc = damage(rep, 0, "anchor malformed (anchor edited)");
		goto out;
	}
	if (hrc == -EBADMSG) {
		rc = damage(rep, 0, "anchor MAC mismatch (anchor edited)");
		goto out;
	}
	if (hrc < 0) {
		rc = hrc;
		goto out;
	}
	if (head.seq > rep->records) {
		rc = damage(rep, rep->records + 1, "log ends at record %llu "
		    "but anchor says %llu (records removed from the end)",
		    (unsigned long long)rep->records,
		    (unsigned long long)head.seq);
		goto out;
	}
	if (head.seq > 0 && !anchor_ok) {
		rc = damage(rep, head.seq, "record %llu does not match the "
		    "anchor (log or anchor replaced)",
		    (unsigned long long)head.seq);
		goto out;
	}
	/*
	 * [KS-AUD-43] An anchor behind the log by complete, chained records
	 * is what a crash between the log write and the anchor update
	 * leaves; the next append moves it.  Not damage.
	 */
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	free(hbuf);
	free(r);
	sodium_memzero(last, sizeof(last));
	return rc;
}

/* ---- foreach --------------------------------------------------------- */

int
cf_ks_audit_foreach(struct cf_ks_home *home, const char *tenant,
    int (*fn)(void *arg, const char *line), void *arg)
{
	struct line_reader *r = NULL;
	json_error_t jerr;
	json_t *obj, *t;
	struct stat st;
	uint64_t lineno = 0, skipped = 0, first_bad = 0;
	off_t lineoff;
	size_t len;
	char *line;
	int fd = -1, ln, match, rc;

	if (fn == NULL)
		cf_misuse("cf_ks_audit_foreach: NULL callback");
	fd = ks_openat(home->dirfd, KS_AUDIT_LOG, O_RDONLY, 0);
	if (fd < 0) {
		rc = fd == -ENOENT ? 0 : fd;
		fd = -1;
		if (rc < 0 && rc != -ELOOP && rc != -EINVAL)
			ks_err(rc, "cannot open %s/%s: %s", home->path,
			    KS_AUDIT_LOG, strerror(-rc));
		goto out;
	}
	if (fstat(fd, &st) != 0) {
		rc = -errno;
		ks_err(rc, "cannot open %s/%s: %s", home->path, KS_AUDIT_LOG,
		    strerror(-rc));
		goto out;
	}
	r = malloc(sizeof(*r));
	if (r == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	/*
	 * No lock: fn may itself append (which takes LOCK_EX).  Reading
	 * stops at the size seen now; an append in flight can show up as a
	 * partial last line.  [KS-AUD-50]
	 */
	reader_init(r, fd, 0, st.st_size);
	for (;;) {
		ln = reader_next(r, &line, &len, &lineoff);
		if (ln < 0) {
			rc = ks_err(ln, "cannot read %s/%s: %s", home->path,
			    KS_AUDIT_LOG, strerror(-ln));
			goto out;
		}
		if (ln == LINE_EOF)
			break;
		lineno++;
		match = 0;
		if (ln == LINE_LONG) {
			match = -1;
		} else if (tenant == NULL) {
			match = 1;
		} else {
			obj = json_loadb(line, len, JSON_REJECT_DUPLICATES,
			    &jerr);
			if (obj == NULL || !json_is_object(obj)) {
				match = -1;
			} else {
				t = json_object_get(obj, "tenant");
				match = json_is_string(t) &&
				    strcmp(json_string_value(t), tenant) == 0;
			}
			json_decref(obj);
		}
		if (match < 0) {
			if (skipped++ == 0)
				first_bad = lineno;
			continue;
		}
		if (match == 0)
			continue;
		rc = fn(arg, line);
		if (rc != 0)
			goto out;
	}
	if (skipped > 0) {
		rc = ks_err(-EPROTO, "%llu audit line(s) could not be read as "
		    "records and were skipped (first: line %llu); run 'coffer "
		    "audit verify'", (unsigned long long)skipped,
		    (unsigned long long)first_bad);
		goto out;
	}
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	free(r);
	return rc;
}
