/*
 * test_audit.c - the tamper-evident audit log (keystore/ks_audit.c,
 * docs/format/audit.md).
 *
 * Each damage case starts from a fresh home with ten records, breaks the
 * log or its anchor in one way with plain file I/O, and checks that
 * verification names the exact record and says what happened.  MACs are
 * recomputed here with one crypto_generichash() call over domain || 0x00
 * || bytes, independently of ks_audit.c, and the known answers come from
 * tests/vectors/audit-v1.json.  [KS-AUD-n] marks cite the spec.
 *
 * Not covered here: the CLI (tests/integration/cli_audit) and fuzzing of
 * cf_ks_audit_parse_line (tests/fuzz/fuzz_audit.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "cf_keystore.h"
#include "cf_test.h"

#define NOW "2026-01-31T12:00:00Z"
#define ZERO_HEX \
	"0000000000000000000000000000000000000000000000000000000000000000"
#define MAX_LINES 128
#define BODY1 "{\"seq\":1,\"time\":\"" NOW "\",\"actor\":\"a\"," \
	"\"event\":\"e\""
#define PREV0 ",\"prev\":\"" ZERO_HEX "\""

/* ---- helpers --------------------------------------------------------- */

static char home_dir[4096];

/* A path under the current case's home (static buffer, one at a time). */
static const char *
hpath(const char *rel)
{
	static char p[8192];

	snprintf(p, sizeof(p), "%s/%s", home_dir, rel);
	return p;
}

static struct cf_ks_home *
open_home(void)
{
	struct cf_ks_home *home = NULL;

	setenv("COFFER_NOW", NOW, 1);
	snprintf(home_dir, sizeof(home_dir), "%s/home", cf_test_tmpdir());
	if (cf_ks_home_open(&home, home_dir, CF_KS_HOME_CREATE) != 0)
		return NULL;
	cf_ks_home_set_actor(home, "tester(1000)");
	return home;
}

static struct cf_ks_home *
reopen_home(struct cf_ks_home *old)
{
	struct cf_ks_home *home = NULL;

	cf_ks_home_free(old);
	if (cf_ks_home_open(&home, home_dir, 0) != 0)
		return NULL;
	cf_ks_home_set_actor(home, "tester(1000)");
	return home;
}

/* Appends records first..first+n-1; odd ones for tenant acme. */
static int
add_records(struct cf_ks_home *home, int first, int n)
{
	int i, rc;

	for (i = first; i < first + n; i++) {
		struct cf_ks_audit_field f[] = {
			{ "tenant", i % 2 ? "acme" : "beta", 0 },
			{ "n", NULL, i },
		};

		rc = cf_ks_audit_append(home, "test.event", f, 2);
		if (rc != 0)
			return rc;
	}
	return 0;
}

/* A home with ten records that verify. */
static struct cf_ks_home *
home_with_ten(void)
{
	struct cf_ks_home *home = open_home();

	if (home == NULL || add_records(home, 1, 10) != 0) {
		cf_ks_home_free(home);
		return NULL;
	}
	return home;
}

struct log {
	unsigned char *buf;
	size_t len;
	size_t n;			/* complete lines */
	size_t off[MAX_LINES];		/* start of line i */
	size_t llen[MAX_LINES];		/* length with its newline */
};

static int
log_load(struct log *l, const char *path)
{
	size_t i, start = 0;

	memset(l, 0, sizeof(*l));
	l->buf = cf_test_read_file(path, &l->len);
	if (l->buf == NULL)
		return -1;
	for (i = 0; i < l->len; i++) {
		if (l->buf[i] != '\n')
			continue;
		if (l->n == MAX_LINES)
			return -1;
		l->off[l->n] = start;
		l->llen[l->n] = i + 1 - start;
		l->n++;
		start = i + 1;
	}
	return 0;
}

static void
log_free(struct log *l)
{
	free(l->buf);
	l->buf = NULL;
}

/* Rewrites path with the lines of l in the given order (0-based). */
static int
log_save_order(const struct log *l, const char *path, const int *order,
    size_t n)
{
	unsigned char *out = malloc(l->len * 2 + 1);
	size_t i, o = 0;
	int rc;

	if (out == NULL)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		memcpy(out + o, l->buf + l->off[order[i]], l->llen[order[i]]);
		o += l->llen[order[i]];
	}
	rc = cf_test_write_file(path, out, o);
	free(out);
	return rc;
}

static int
append_bytes(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY | O_APPEND);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = write(fd, s, strlen(s));
	close(fd);
	return n == (ssize_t)strlen(s) ? 0 : -EIO;
}

static off_t
file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? st.st_size : -1;
}

static int
file_mode(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? (int)(st.st_mode & 07777) : -1;
}

/* The reference MAC: one-shot BLAKE2b-256(key, domain || 0x00 || buf). */
static void
ref_mac(unsigned char out[32], const unsigned char key[32],
    const char *domain, const void *buf, size_t len)
{
	size_t dl = strlen(domain) + 1;
	unsigned char *in = malloc(dl + len + 1);

	if (in == NULL)
		abort();
	memcpy(in, domain, dl);
	memcpy(in + dl, buf, len);
	if (crypto_generichash(out, 32, in, dl + len, key, 32) != 0)
		abort();
	free(in);
}

/* body || ,"mac":"<reference MAC of body>"} as a malloc'd string. */
static char *
mkline(const unsigned char key[32], const char *body)
{
	unsigned char mac[32];
	char hex[65];
	size_t bl = strlen(body);
	char *line = malloc(bl + 80);

	if (line == NULL)
		abort();
	ref_mac(mac, key, "coffer-audit-v1", body, bl);
	sodium_bin2hex(hex, sizeof(hex), mac, sizeof(mac));
	snprintf(line, bl + 80, "%s,\"mac\":\"%s\"}", body, hex);
	return line;
}

/* An anchor file image: body || ,"hmac":"<reference hmac>"} || '\n'. */
static size_t
make_head(const unsigned char key[32], const char *body, char *out,
    size_t cap)
{
	unsigned char hm[32];
	char hex[65];
	int n;

	ref_mac(hm, key, "coffer-audit-head-v1", body, strlen(body));
	sodium_bin2hex(hex, sizeof(hex), hm, sizeof(hm));
	n = snprintf(out, cap, "%s,\"hmac\":\"%s\"}\n", body, hex);
	if (n < 0 || (size_t)n >= cap)
		abort();
	return (size_t)n;
}

static int
parse(const unsigned char key[32], const char *line)
{
	unsigned char prev[32], mac[32];
	uint64_t seq;

	return cf_ks_audit_parse_line(key, line, strlen(line), &seq, prev,
	    mac);
}

/* The 32-byte key from a key file. */
static int
read_key(const char *path, unsigned char key[32])
{
	size_t len;
	unsigned char *k = cf_test_read_file(path, &len);

	if (k == NULL || len != 32) {
		free(k);
		return -1;
	}
	memcpy(key, k, 32);
	sodium_memzero(k, len);
	free(k);
	return 0;
}

static int
verify(struct cf_ks_home *home, struct cf_ks_audit_report *rep)
{
	int rc = cf_ks_audit_verify(home, rep);

	if (rc != 0)
		printf("# verify: rc %d, bad_seq %llu, problem: %s\n", rc,
		    (unsigned long long)rep->bad_seq, rep->problem);
	return rc;
}

struct collect {
	int n;
	int stop_at;
	int bad;
	const char *want;
};

static int
collect_fn(void *arg, const char *line)
{
	struct collect *c = arg;

	c->n++;
	if (c->want != NULL && strstr(line, c->want) == NULL)
		c->bad++;
	if (strchr(line, '\n') != NULL)
		c->bad++;
	return c->n == c->stop_at ? 7 : 0;
}

/* ---- the intact log -------------------------------------------------- */

/* [KS-AUD-1] [KS-AUD-9] [KS-AUD-10] [KS-AUD-41] */
static void
test_ten_records_verify(void)
{
	struct cf_ks_audit_report rep;
	struct cf_ks_home *home = open_home();
	unsigned char key[32], prev[32], mac[32], last[32];
	struct log l;
	uint64_t seq;
	size_t i;

	CHECK(home != NULL);
	/* [KS-AUD-41] nothing written yet: intact and empty. */
	CHECK_RC(verify(home, &rep), 0);
	CHECK(rep.records == 0 && rep.problem[0] == '\0');
	CHECK(file_size(hpath("audit/audit.key")) == -1);

	CHECK_RC(add_records(home, 1, 10), 0);
	CHECK_RC(verify(home, &rep), 0);
	CHECK(rep.records == 10);
	CHECK(rep.bad_seq == 0);
	CHECK(rep.problem[0] == '\0');

	CHECK(file_mode(hpath("audit")) == 0700);
	CHECK(file_mode(hpath("audit/audit.log")) == 0600);
	CHECK(file_mode(hpath("audit/head")) == 0600);
	CHECK(file_mode(hpath("audit/audit.key")) == 0600);
	CHECK(file_size(hpath("audit/audit.key")) == 32);

	/* [KS-AUD-9] [KS-AUD-10] seq 1..10, each prev the previous mac. */
	CHECK_RC(read_key(hpath("audit/audit.key"), key), 0);
	CHECK_RC(log_load(&l, hpath("audit/audit.log")), 0);
	CHECK(l.n == 10);
	memset(last, 0, sizeof(last));
	for (i = 0; i < l.n; i++) {
		CHECK_RC(cf_ks_audit_parse_line(key, (const char *)l.buf +
		    l.off[i], l.llen[i] - 1, &seq, prev, mac), 0);
		CHECK(seq == i + 1);
		CHECK(sodium_memcmp(prev, last, 32) == 0);
		memcpy(last, mac, 32);
	}
	/* ,"prev":"<64 zeros>" is the 74 bytes before ,"mac":"<64 hex>"} */
	CHECK(strstr((const char *)l.buf, ",\"prev\":\"" ZERO_HEX "\"") ==
	    (const char *)l.buf + l.llen[0] - 1 - 74 - 74);
	log_free(&l);
	sodium_memzero(key, sizeof(key));
	cf_ks_home_free(home);
}

/* [KS-AUD-5] [KS-AUD-11] byte layout of one record. */
static void
test_record_layout(void)
{
	struct cf_ks_home *home = open_home();
	struct cf_ks_audit_field f[] = {
		{ "tenant", "acme", 0 },
		{ "count", NULL, -7 },
		{ "note", "a\"b\\c/d\ne\001", 0 },
	};
	static const char want[] = "{\"seq\":1,\"time\":\"" NOW "\","
	    "\"actor\":\"tester(1000)\",\"event\":\"kms.kek_created\","
	    "\"tenant\":\"acme\",\"count\":-7,"
	    "\"note\":\"a\\\"b\\\\c/d\\ne\\u0001\",\"prev\":\"" ZERO_HEX "\","
	    "\"mac\":\"";
	unsigned char key[32], mac[32];
	char hex[65];
	unsigned char *log;
	size_t len;

	CHECK(home != NULL);
	CHECK_RC(cf_ks_audit_append(home, "kms.kek_created", f, 3), 0);
	log = cf_test_read_file(hpath("audit/audit.log"), &len);
	CHECK(log != NULL);
	CHECK(len == sizeof(want) - 1 + 64 + 3);
	CHECK(memcmp(log, want, sizeof(want) - 1) == 0);
	CHECK(memcmp(log + len - 3, "\"}\n", 3) == 0);
	/* [KS-AUD-8] the MAC is over the bytes before ,"mac":" */
	CHECK_RC(read_key(hpath("audit/audit.key"), key), 0);
	ref_mac(mac, key, "coffer-audit-v1", log, sizeof(want) - 1 - 8);
	sodium_bin2hex(hex, sizeof(hex), mac, sizeof(mac));
	CHECK(memcmp(log + sizeof(want) - 1, hex, 64) == 0);
	free(log);
	cf_ks_home_free(home);
}

/* ---- damage, one kind at a time ------------------------------------- */

/* [KS-AUD-42] a byte edited inside record 5. */
static void
test_damage_edit(void)
{
	struct cf_ks_audit_report rep;
	struct cf_ks_home *home = home_with_ten();
	struct log l;
	char *p;

	CHECK(home != NULL);
	CHECK_RC(log_load(&l, hpath("audit/audit.log")), 0);
	p = strstr((char *)l.buf + l.off[4], "test.event");
	CHECK(p != NULL && p < (char *)l.buf + l.off[5]);
	p[5] = 'E';
	CHECK_RC(cf_test_write_file(hpath("audit/audit.log"), l.buf, l.len),
	    0);
	log_free(&l);
	CHECK_RC(verify(home, &rep), -EBADMSG);
	CHECK(rep.bad_seq == 5);
	CHECK(rep.records == 4);
	CHECK(strstr(rep.problem, "record 5: MAC mismatch") != NULL);
	CHECK(strstr(cf_ks_last_error(), "MAC mismatch") != NULL);
	cf_ks_home_free(home);
}

/* [KS-AUD-42] a copy of record 3 inserted after record 5. */
static void
test_damage_insert(void)
{
	static const int order[] = { 0, 1, 2, 3, 4, 2, 5, 6, 7, 8, 9 };
	struct cf_ks_audit_report rep;
	struct cf_ks_home *home = home_with_ten();
	struct log l;

	CHECK(home != NULL);
	CHECK_RC(log_load(&l, hpath("audit/audit.log")), 0);
	CHECK_RC(log_save_order(&l, hpath("audit/audit.log"), order, 11), 0);
	log_free(&l);
	CHECK_RC(verify(home, &rep), -EBADMSG);
	CHECK(rep.bad_seq == 6);
	CHECK(strstr(rep.problem, "record 6: expected seq 6, found 3") !=
	    NULL);
	cf_ks_home_free(home);
}

/* [KS-AUD-42] record 5 deleted. */
static void
test_damage_delete(void)
{
	static const int order[] = { 0, 1, 2, 3, 5, 6, 7, 8, 9 };
	struct cf_ks_audit_report rep;
	struct cf_ks_home *home = home_with_ten();
	struct log l;

	CHECK(home != NULL);
	CHECK_RC(log_load(&l, hpath("audit/audit.log")), 0);
	CHECK_RC(log_save_order(&l, hpath("audit/audit.log"), order, 9), 0);
	log_free(&l);
	CHECK_RC(verify(home, &rep), -EBADMSG);
	CHECK(rep.bad_seq == 5);
	CHECK(strstr(rep.problem, "record 5: expected seq 5, found 6") !=
	    NULL);
	CHECK(strstr(rep.problem, "removed") != NULL);
	cf_ks_home_free(home);
}

/* [KS-AUD-42] records 4 and 5 swapped. */
static void
test_damage_reorder(void)
{
	static const int order[] = { 0, 1, 2, 4, 3, 5, 6, 7, 8, 9 };
	struct cf_ks_audit_report rep;
	struct cf_ks_home *home = home_with_ten();
	struct log l;

	CHECK(home != NULL);
	CHECK_RC(log_load(&l, hpath("audit/audit.log")), 0);
	CHECK_RC(log_save_order(&l, hpath("audit/audit.log"), order, 10), 0);
	log_free(&l);
	CHECK_RC(verify(home, &rep), -EBADMSG);
	CHECK(rep.bad_seq == 4);
	CHECK(strstr(rep.problem, "record 4: expected seq 4, found 5") !=
	    NULL);
	cf_ks_home_free(home);
}

/* [KS-AUD-42] the last line cut in the middle. */
static void
test_damage_truncate_partial(void)
{
	struct cf_ks_audit_report rep;
	struct cf_ks_home *home = home_with_ten();
	struct log l;

	CHECK(home != NULL);
	CHECK_RC(log_load(&l, hpath("audit/audit.log")), 0);
	CHECK_RC(cf_test_write_file(hpath("audit/audit.log"), l.buf,
	    l.len - 20), 0);
	log_free(&l);
	CHECK_RC(verify(home, &rep), -EBADMSG);
	CHECK(rep.bad_seq == 10);
	CHECK(rep.records == 9);
	CHECK(strstr(rep.problem, "record 10: incomplete last line "
	    "(truncated)") != NULL);
	cf_ks_home_free(home);
}

/* [KS-AUD-42] the last complete record removed: only the anchor knows. */
static void
test_damage_remove_last(void)
{
	static const int order[] = { 0, 1, 2, 3, 4, 5, 6, 7, 8 };
	struct cf_ks_audit_report rep;
	struct cf_ks_home *home = home_with_ten();
	struct log l;

	CHECK(home != NULL);
	CHECK_RC(log_load(&l, hpath("audit/audit.log")), 0);
	CHECK_RC(log_save_order(&l, hpath("audit/audit.log"), order, 9), 0);
	log_free(&l);
	CHECK_RC(verify(home, &rep), -EBADMSG);
	CHECK(rep.bad_seq == 10);
	CHECK(rep.records == 9);
	CHECK(strstr(rep.problem, "log ends at record 9 but anchor says 10") !=
	    NULL);
	cf_ks_home_free(home);
}

/* [KS-AUD-21] [KS-AUD-22] [KS-AUD-42] the anchor edited. */
static void
test_damage_head(void)
{
	struct cf_ks_audit_report rep;
	struct cf_ks_home *home = home_with_ten();
	unsigned char *h;
	size_t len;

	CHECK(home != NULL);
	h = cf_test_read_file(hpath("audit/head"), &len);
	CHECK(h != NULL);
	CHECK(memcmp(h, "{\"seq\":10,", 10) == 0);
	/* A well-formed anchor with a different seq: the hmac fails. */
	h[8] = '1';
	CHECK_RC(cf_test_write_file(hpath("audit/head"), h, len), 0);
	CHECK_RC(verify(home, &rep), -EBADMSG);
	CHECK(rep.bad_seq == 0);
	CHECK(rep.records == 10);
	CHECK(strstr(rep.problem, "anchor MAC mismatch (anchor edited)") !=
	    NULL);
	/* Not even JSON. */
	h[0] = '[';
	CHECK_RC(cf_test_write_file(hpath("audit/head"), h, len), 0);
	CHECK_RC(verify(home, &rep), -EBADMSG);
	CHECK(strstr(rep.problem, "anchor malformed") != NULL);
	free(h);
	/* [KS-AUD-33] append refuses to write past a damaged anchor. */
	CHECK_RC(add_records(home, 11, 1), -EBADMSG);
	CHECK(strstr(cf_ks_last_error(), "anchor") != NULL);
	/* Removed: the log alone cannot show it was not cut short. */
	CHECK(unlink(hpath("audit/head")) == 0);
	CHECK_RC(verify(home, &rep), -EBADMSG);
	CHECK(strstr(rep.problem, "anchor missing") != NULL);
	CHECK_RC(add_records(home, 11, 1), -EBADMSG);
	CHECK(strstr(cf_ks_last_error(), "anchor") != NULL);
	cf_ks_home_free(home);
}

/*
 * [KS-AUD-42] record 5 replaced by a record with the right seq and a valid
 * MAC (same key) that chains from elsewhere: only prev gives it away.
 */
static void
test_damage_prev_splice(void)
{
	struct cf_ks_audit_report rep;
	struct cf_ks_home *home = home_with_ten();
	unsigned char key[32];
	char *line, *out;
	struct log l;
	size_t o;

	CHECK(home != NULL);
	CHECK_RC(read_key(hpath("audit/audit.key"), key), 0);
	line = mkline(key, "{\"seq\":5,\"time\":\"" NOW "\",\"actor\":\"x\","
	    "\"event\":\"spliced\"" PREV0);
	CHECK_RC(parse(key, line), 0);
	CHECK_RC(log_load(&l, hpath("audit/audit.log")), 0);
	out = malloc(l.len + strlen(line) + 2);
	CHECK(out != NULL);
	memcpy(out, l.buf, l.off[4]);
	o = l.off[4];
	memcpy(out + o, line, strlen(line));
	o += strlen(line);
	out[o++] = '\n';
	memcpy(out + o, l.buf + l.off[5], l.len - l.off[5]);
	o += l.len - l.off[5];
	CHECK_RC(cf_test_write_file(hpath("audit/audit.log"), out, o), 0);
	free(out);
	free(line);
	log_free(&l);
	CHECK_RC(verify(home, &rep), -EBADMSG);
	CHECK(rep.bad_seq == 5);
	CHECK(strstr(rep.problem, "record 5: prev does not match record 4") !=
	    NULL);
	sodium_memzero(key, sizeof(key));
	cf_ks_home_free(home);
}

/* [KS-AUD-12] [KS-AUD-42] [KS-AUD-50] a line over the limit. */
static void
test_damage_long_line(void)
{
	struct cf_ks_audit_report rep;
	struct cf_ks_home *home = home_with_ten();
	struct collect c;
	struct log l;
	char *out;
	size_t o;

	CHECK(home != NULL);
	CHECK_RC(log_load(&l, hpath("audit/audit.log")), 0);
	out = malloc(l.len + 5002);
	CHECK(out != NULL);
	memcpy(out, l.buf, l.off[4]);
	o = l.off[4];
	memset(out + o, 'x', 5000);
	o += 5000;
	out[o++] = '\n';
	memcpy(out + o, l.buf + l.off[5], l.len - l.off[5]);
	o += l.len - l.off[5];
	CHECK_RC(cf_test_write_file(hpath("audit/audit.log"), out, o), 0);
	free(out);
	log_free(&l);
	CHECK_RC(verify(home, &rep), -EBADMSG);
	CHECK(rep.bad_seq == 5);
	CHECK(strstr(rep.problem, "record 5: line longer than 4096 bytes") !=
	    NULL);
	/* foreach shows the other nine lines and reports the long one. */
	memset(&c, 0, sizeof(c));
	CHECK_RC(cf_ks_audit_foreach(home, NULL, collect_fn, &c), -EPROTO);
	CHECK(c.n == 9 && c.bad == 0);
	CHECK(strstr(cf_ks_last_error(), "line 5") != NULL);
	cf_ks_home_free(home);
}

/*
 * [KS-AUD-20] .. [KS-AUD-23] [KS-AUD-42] anchors that carry a valid hmac
 * (made here with the real key) but do not describe this log, or are not
 * spelled canonically.
 */
static void
test_damage_anchor_forged(void)
{
	struct cf_ks_audit_report rep;
	struct cf_ks_home *home = home_with_ten();
	unsigned char key[32], prev[32], mac[32];
	char body[256], head[512], machex[65];
	struct log l;
	uint64_t seq;
	size_t n, size;

	CHECK(home != NULL);
	CHECK_RC(read_key(hpath("audit/audit.key"), key), 0);
	CHECK_RC(log_load(&l, hpath("audit/audit.log")), 0);
	size = l.len;
	CHECK_RC(cf_ks_audit_parse_line(key, (const char *)l.buf + l.off[9],
	    l.llen[9] - 1, &seq, prev, mac), 0);
	log_free(&l);
	sodium_bin2hex(machex, sizeof(machex), mac, sizeof(mac));

	/* Control: the canonical anchor, rebuilt here, is the real one. */
	snprintf(body, sizeof(body), "{\"seq\":10,\"len\":%zu,\"mac\":\"%s\"",
	    size, machex);
	n = make_head(key, body, head, sizeof(head));
	CHECK_RC(cf_test_write_file(hpath("audit/head"), head, n), 0);
	CHECK_RC(verify(home, &rep), 0);

	/* Some other MAC. */
	snprintf(body, sizeof(body), "{\"seq\":10,\"len\":%zu,\"mac\":\"%s\"",
	    size, ZERO_HEX);
	n = make_head(key, body, head, sizeof(head));
	CHECK_RC(cf_test_write_file(hpath("audit/head"), head, n), 0);
	CHECK_RC(verify(home, &rep), -EBADMSG);
	CHECK(rep.bad_seq == 10);
	CHECK(strstr(rep.problem, "record 10 does not match the anchor") !=
	    NULL);
	CHECK_RC(add_records(home, 11, 1), -EBADMSG);

	/* The right MAC, the wrong length. */
	snprintf(body, sizeof(body), "{\"seq\":10,\"len\":%zu,\"mac\":\"%s\"",
	    size - 1, machex);
	n = make_head(key, body, head, sizeof(head));
	CHECK_RC(cf_test_write_file(hpath("audit/head"), head, n), 0);
	CHECK_RC(verify(home, &rep), -EBADMSG);
	CHECK(strstr(rep.problem, "record 10 does not match the anchor") !=
	    NULL);

	/* Valid JSON, valid hmac, but not the canonical spelling. */
	snprintf(body, sizeof(body), "{\"seq\":10, \"len\":%zu,\"mac\":\"%s\"",
	    size, machex);
	n = make_head(key, body, head, sizeof(head));
	CHECK_RC(cf_test_write_file(hpath("audit/head"), head, n), 0);
	CHECK_RC(verify(home, &rep), -EBADMSG);
	CHECK(strstr(rep.problem, "anchor malformed") != NULL);
	snprintf(body, sizeof(body), "{\"len\":%zu,\"seq\":10,\"mac\":\"%s\"",
	    size, machex);
	n = make_head(key, body, head, sizeof(head));
	CHECK_RC(cf_test_write_file(hpath("audit/head"), head, n), 0);
	CHECK_RC(verify(home, &rep), -EBADMSG);
	CHECK(strstr(rep.problem, "anchor malformed") != NULL);

	/* seq 0 must come with len 0 and a zero MAC. */
	n = make_head(key, "{\"seq\":0,\"len\":5,\"mac\":\"" ZERO_HEX "\"",
	    head, sizeof(head));
	CHECK_RC(cf_test_write_file(hpath("audit/head"), head, n), 0);
	CHECK_RC(verify(home, &rep), -EBADMSG);
	CHECK(strstr(rep.problem, "anchor malformed") != NULL);
	sodium_memzero(key, sizeof(key));
	cf_ks_home_free(home);
}

/* [KS-AUD-4] [KS-AUD-42] another audit key: every record fails. */
static void
test_damage_wrong_key(void)
{
	struct cf_ks_audit_report rep;
	struct cf_ks_home *home = home_with_ten();
	unsigned char key[32], other[32];
	struct log l;
	size_t i;

	CHECK(home != NULL);
	CHECK_RC(read_key(hpath("audit/audit.key"), key), 0);
	memset(other, 0x55, sizeof(other));
	CHECK_RC(cf_test_write_file(hpath("audit/audit.key"), other, 32), 0);
	home = reopen_home(home);	/* the key is cached per home */
	CHECK(home != NULL);
	CHECK_RC(verify(home, &rep), -EBADMSG);
	CHECK(rep.bad_seq == 1);
	CHECK(rep.records == 0);
	CHECK(strstr(rep.problem, "record 1: MAC mismatch") != NULL);
	CHECK_RC(log_load(&l, hpath("audit/audit.log")), 0);
	CHECK(l.n == 10);
	for (i = 0; i < l.n; i++) {
		unsigned char prev[32], mac[32];
		uint64_t seq;
		const char *s = (const char *)l.buf + l.off[i];

		CHECK_RC(cf_ks_audit_parse_line(other, s, l.llen[i] - 1, &seq,
		    prev, mac), -EBADMSG);
		CHECK_RC(cf_ks_audit_parse_line(key, s, l.llen[i] - 1, &seq,
		    prev, mac), 0);
	}
	log_free(&l);
	/* The anchor is refused too, so nothing can be appended. */
	CHECK_RC(add_records(home, 11, 1), -EBADMSG);
	sodium_memzero(key, sizeof(key));
	cf_ks_home_free(home);
}

/* [KS-AUD-4] a missing key is never silently replaced. */
static void
test_missing_key(void)
{
	struct cf_ks_audit_report rep;
	struct cf_ks_home *home = home_with_ten();
	off_t size;

	CHECK(home != NULL);
	size = file_size(hpath("audit/audit.log"));
	CHECK(unlink(hpath("audit/audit.key")) == 0);
	home = reopen_home(home);
	CHECK(home != NULL);
	CHECK_RC(add_records(home, 11, 1), -ENOENT);
	CHECK(strstr(cf_ks_last_error(), "audit key") != NULL);
	CHECK(file_size(hpath("audit/audit.key")) == -1);
	CHECK(file_size(hpath("audit/audit.log")) == size);
	CHECK_RC(cf_ks_audit_verify(home, &rep), -ENOENT);
	cf_ks_home_free(home);
}

/* ---- crashes and append's refusals ----------------------------------- */

/* [KS-AUD-32] a torn last line is cut off and the chain goes on. */
static void
test_append_after_torn_write(void)
{
	struct cf_ks_audit_report rep;
	struct cf_ks_home *home = open_home();
	unsigned char key[32], prev[32], mac3[32], mac4[32], prev4[32];
	struct log l;
	off_t size;
	uint64_t seq;

	CHECK(home != NULL);
	CHECK_RC(add_records(home, 1, 3), 0);
	size = file_size(hpath("audit/audit.log"));
	CHECK_RC(append_bytes(hpath("audit/audit.log"),
	    "{\"seq\":4,\"time\":\"2026-01-"), 0);
	/* Until the next append, verify reports it (not an anchor issue). */
	CHECK_RC(verify(home, &rep), -EBADMSG);
	CHECK(rep.bad_seq == 4);
	CHECK(strstr(rep.problem, "record 4: incomplete last line "
	    "(interrupted append") != NULL);
	CHECK_RC(add_records(home, 4, 1), 0);
	CHECK_RC(verify(home, &rep), 0);
	CHECK(rep.records == 4);

	CHECK_RC(read_key(hpath("audit/audit.key"), key), 0);
	CHECK_RC(log_load(&l, hpath("audit/audit.log")), 0);
	CHECK(l.n == 4);
	CHECK(l.off[3] == (size_t)size);
	CHECK(l.off[3] + l.llen[3] == l.len);
	CHECK_RC(cf_ks_audit_parse_line(key, (const char *)l.buf + l.off[2],
	    l.llen[2] - 1, &seq, prev, mac3), 0);
	CHECK_RC(cf_ks_audit_parse_line(key, (const char *)l.buf + l.off[3],
	    l.llen[3] - 1, &seq, prev4, mac4), 0);
	CHECK(seq == 4);
	CHECK(sodium_memcmp(prev4, mac3, 32) == 0);
	log_free(&l);
	sodium_memzero(key, sizeof(key));
	cf_ks_home_free(home);
}

/* [KS-AUD-32] [KS-AUD-43] a crash between the log write and the anchor. */
static void
test_anchor_behind(void)
{
	static const int order[] = { 0, 1, 2, 4, 3, 5 };
	struct cf_ks_audit_report rep;
	struct cf_ks_home *home = open_home();
	unsigned char *h3, *h;
	size_t h3len, hlen;
	struct log l;

	CHECK(home != NULL);
	CHECK_RC(add_records(home, 1, 3), 0);
	h3 = cf_test_read_file(hpath("audit/head"), &h3len);
	CHECK(h3 != NULL);
	CHECK_RC(add_records(home, 4, 2), 0);
	/* The old anchor back: as if records 4 and 5 were never anchored. */
	CHECK_RC(cf_test_write_file(hpath("audit/head"), h3, h3len), 0);
	CHECK_RC(verify(home, &rep), 0);
	CHECK(rep.records == 5);
	CHECK(rep.problem[0] == '\0');
	CHECK_RC(add_records(home, 6, 1), 0);
	CHECK_RC(verify(home, &rep), 0);
	CHECK(rep.records == 6);
	h = cf_test_read_file(hpath("audit/head"), &hlen);
	CHECK(h != NULL);
	CHECK(memcmp(h, "{\"seq\":6,", 9) == 0);
	free(h);

	/* Records after the anchor must chain on: 5 and 4 swapped do not. */
	CHECK_RC(cf_test_write_file(hpath("audit/head"), h3, h3len), 0);
	CHECK_RC(log_load(&l, hpath("audit/audit.log")), 0);
	CHECK_RC(log_save_order(&l, hpath("audit/audit.log"), order, 6), 0);
	log_free(&l);
	CHECK_RC(add_records(home, 7, 1), -EBADMSG);
	CHECK(strstr(cf_ks_last_error(), "after its anchor (record 4)") !=
	    NULL);
	CHECK_RC(verify(home, &rep), -EBADMSG);
	CHECK(rep.bad_seq == 4);
	free(h3);
	cf_ks_home_free(home);
}

/*
 * [KS-AUD-23] a crash right after the very first record was written: the
 * seq-0 anchor written before it (rebuilt here from the spec) is merely
 * behind, and the next append moves it on.
 */
static void
test_first_record_crash(void)
{
	struct cf_ks_audit_report rep;
	struct cf_ks_home *home = open_home();
	unsigned char key[32];
	char head[256];
	size_t n;

	CHECK(home != NULL);
	CHECK_RC(cf_ks_audit_append(home, "first", NULL, 0), 0);
	CHECK_RC(read_key(hpath("audit/audit.key"), key), 0);
	n = make_head(key, "{\"seq\":0,\"len\":0,\"mac\":\"" ZERO_HEX "\"",
	    head, sizeof(head));
	CHECK_RC(cf_test_write_file(hpath("audit/head"), head, n), 0);
	CHECK_RC(verify(home, &rep), 0);
	CHECK(rep.records == 1);
	CHECK_RC(cf_ks_audit_append(home, "second", NULL, 0), 0);
	CHECK_RC(verify(home, &rep), 0);
	CHECK(rep.records == 2);
	/* The seq-0 anchor alone, with an empty log, is an intact log. */
	CHECK_RC(cf_test_write_file(hpath("audit/head"), head, n), 0);
	CHECK_RC(cf_test_write_file(hpath("audit/audit.log"), "", 0), 0);
	CHECK_RC(verify(home, &rep), 0);
	CHECK(rep.records == 0);
	/* ...but with a record-less log and an anchor at seq 2 it is not. */
	CHECK_RC(cf_ks_audit_append(home, "first", NULL, 0), 0);
	CHECK_RC(cf_ks_audit_append(home, "second", NULL, 0), 0);
	CHECK(unlink(hpath("audit/audit.log")) == 0);
	CHECK_RC(verify(home, &rep), -EBADMSG);
	CHECK(rep.bad_seq == 1);
	CHECK(strstr(rep.problem, "log ends at record 0 but anchor says 2") !=
	    NULL);
	sodium_memzero(key, sizeof(key));
	cf_ks_home_free(home);
}

/*
 * [KS-AUD-23] [KS-AUD-31] the first append anchors the empty log before
 * writing record 1.  A child whose RLIMIT_FSIZE lets the anchor through
 * but not the record shows the state a crash at that point leaves.
 */
static void
test_first_append_anchors_empty_log(void)
{
	struct cf_ks_audit_report rep;
	struct cf_ks_home *home = open_home();
	unsigned char key[32], *h;
	char want[256];
	size_t n, hlen;
	pid_t pid;
	int status;

	CHECK(home != NULL);
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		struct rlimit rl = { 200, 200 };
		char big[400];
		struct cf_ks_audit_field f = { "pad", big, 0 };

		memset(big, 'p', sizeof(big) - 1);
		big[sizeof(big) - 1] = '\0';
		signal(SIGXFSZ, SIG_IGN);
		if (setrlimit(RLIMIT_FSIZE, &rl) != 0)
			_exit(2);
		_exit(cf_ks_audit_append(home, "big", &f, 1) == 0 ? 0 : 1);
	}
	CHECK(waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 1);
	/* The torn record was cut off; the seq-0 anchor is in place. */
	CHECK(file_size(hpath("audit/audit.log")) == 0);
	CHECK_RC(read_key(hpath("audit/audit.key"), key), 0);
	n = make_head(key, "{\"seq\":0,\"len\":0,\"mac\":\"" ZERO_HEX "\"",
	    want, sizeof(want));
	h = cf_test_read_file(hpath("audit/head"), &hlen);
	CHECK(h != NULL);
	CHECK(hlen == n && memcmp(h, want, n) == 0);
	free(h);
	CHECK_RC(verify(home, &rep), 0);
	CHECK(rep.records == 0);
	CHECK_RC(add_records(home, 1, 2), 0);
	CHECK_RC(verify(home, &rep), 0);
	CHECK(rep.records == 2);
	sodium_memzero(key, sizeof(key));
	cf_ks_home_free(home);
}

/* [KS-AUD-33] the log cut below its anchor: append refuses. */
static void
test_append_refuses_truncated(void)
{
	static const int order[] = { 0, 1, 2, 3, 4, 5, 6, 7, 8 };
	struct cf_ks_home *home = home_with_ten();
	struct log l;
	off_t size;

	CHECK(home != NULL);
	CHECK_RC(log_load(&l, hpath("audit/audit.log")), 0);
	CHECK_RC(log_save_order(&l, hpath("audit/audit.log"), order, 9), 0);
	log_free(&l);
	size = file_size(hpath("audit/audit.log"));
	CHECK_RC(add_records(home, 11, 1), -EBADMSG);
	CHECK(strstr(cf_ks_last_error(), "audit log is shorter than its "
	    "anchor (records removed?); run 'coffer audit verify'") != NULL);
	CHECK(file_size(hpath("audit/audit.log")) == size);
	cf_ks_home_free(home);
}

/* [KS-AUD-33] the last record edited: append refuses. */
static void
test_append_refuses_edited_tail(void)
{
	struct cf_ks_home *home = home_with_ten();
	struct log l;
	char *p;

	CHECK(home != NULL);
	CHECK_RC(log_load(&l, hpath("audit/audit.log")), 0);
	p = strstr((char *)l.buf + l.off[9], "test.event");
	CHECK(p != NULL);
	p[0] = 'T';
	CHECK_RC(cf_test_write_file(hpath("audit/audit.log"), l.buf, l.len),
	    0);
	CHECK_RC(add_records(home, 11, 1), -EBADMSG);
	CHECK(strstr(cf_ks_last_error(), "does not match its anchor") != NULL);
	CHECK(file_size(hpath("audit/audit.log")) == (off_t)l.len);
	/* Garbage after the anchor that is not a torn record: refused. */
	p[0] = 't';
	CHECK_RC(cf_test_write_file(hpath("audit/audit.log"), l.buf, l.len),
	    0);
	CHECK_RC(append_bytes(hpath("audit/audit.log"), "junk\n"), 0);
	CHECK_RC(add_records(home, 11, 1), -EBADMSG);
	CHECK(strstr(cf_ks_last_error(), "after its anchor") != NULL);
	CHECK(file_size(hpath("audit/audit.log")) == (off_t)l.len + 5);
	log_free(&l);
	cf_ks_home_free(home);
}

/* [KS-AUD-30] appends from several processes interleave whole records. */
static void
test_concurrent_appends(void)
{
	struct cf_ks_audit_report rep;
	struct cf_ks_home *home = open_home();
	pid_t pids[4];
	int i, status;

	CHECK(home != NULL);
	cf_ks_home_free(home);
	for (i = 0; i < 4; i++) {
		pids[i] = fork();
		CHECK(pids[i] >= 0);
		if (pids[i] == 0) {
			struct cf_ks_home *h = NULL;

			if (cf_ks_home_open(&h, home_dir, 0) != 0 ||
			    add_records(h, 1, 25) != 0)
				_exit(1);
			cf_ks_home_free(h);
			_exit(0);
		}
	}
	for (i = 0; i < 4; i++) {
		CHECK(waitpid(pids[i], &status, 0) == pids[i]);
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	home = reopen_home(NULL);
	CHECK(home != NULL);
	CHECK_RC(verify(home, &rep), 0);
	CHECK(rep.records == 100);
	cf_ks_home_free(home);
}

/* ---- append's input checks ------------------------------------------ */

/* [KS-AUD-6] [KS-AUD-7] [KS-AUD-12] */
static void
test_field_validation(void)
{
	static const char *const bad[] = {
		"MAC", "seq", "mac", "prev", "time", "actor", "event", "",
		"a-b", "tenant1", "Tenant", "a b",
	};
	struct cf_ks_audit_report rep;
	struct cf_ks_home *home = home_with_ten();
	struct cf_ks_audit_field f[2];
	off_t size;
	size_t i;

	CHECK(home != NULL);
	size = file_size(hpath("audit/audit.log"));
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		f[0].key = bad[i];
		f[0].str = "x";
		f[0].num = 0;
		CHECK_RC(cf_ks_audit_append(home, "e", f, 1), -EINVAL);
	}
	f[0].key = NULL;
	CHECK_RC(cf_ks_audit_append(home, "e", f, 1), -EINVAL);
	/* Duplicate keys would make a line every reader rejects. */
	f[0].key = "tenant";
	f[1].key = "tenant";
	f[1].str = "y";
	CHECK_RC(cf_ks_audit_append(home, "e", f, 2), -EINVAL);
	/* Not UTF-8. */
	f[0].str = "\xff\xfe";
	CHECK_RC(cf_ks_audit_append(home, "e", f, 1), -EINVAL);
	CHECK_RC(cf_ks_audit_append(home, "\xc3", NULL, 0), -EINVAL);
	CHECK_RC(cf_ks_audit_append(home, "", NULL, 0), -EINVAL);
	CHECK_RC(cf_ks_audit_append(home, NULL, NULL, 0), -EINVAL);
	CHECK(file_size(hpath("audit/audit.log")) == size);
	/* The good spelling works. */
	f[0].key = "tenant_name";
	f[0].str = "acme";
	CHECK_RC(cf_ks_audit_append(home, "e", f, 1), 0);
	CHECK_RC(verify(home, &rep), 0);
	CHECK(rep.records == 11);
	cf_ks_home_free(home);
}

/* [KS-AUD-12] the writer and the parser agree on 4096 bytes exactly. */
static void
test_line_limit_append(void)
{
	struct cf_ks_audit_report rep;
	struct cf_ks_home *home = open_home();
	struct cf_ks_audit_field f = { "v", "x", 0 };
	char *big;
	off_t size, one;
	size_t n;

	CHECK(home != NULL);
	CHECK_RC(cf_ks_audit_append(home, "e", &f, 1), 0);
	one = file_size(hpath("audit/audit.log")) - 1;	/* record 1 */
	CHECK(one > 0 && one < 4096);
	/* Records 2 and 3 have as many seq digits as record 1. */
	n = 4096 - (size_t)one + 1;
	big = malloc(n + 2);
	CHECK(big != NULL);
	memset(big, 'y', n + 1);
	big[n + 1] = '\0';
	f.str = big;
	size = file_size(hpath("audit/audit.log"));
	CHECK_RC(cf_ks_audit_append(home, "e", &f, 1), -EINVAL);
	CHECK(file_size(hpath("audit/audit.log")) == size);
	big[n] = '\0';
	CHECK_RC(cf_ks_audit_append(home, "e", &f, 1), 0);
	CHECK(file_size(hpath("audit/audit.log")) == size + 4097);
	free(big);
	CHECK_RC(verify(home, &rep), 0);
	CHECK(rep.records == 2);
	cf_ks_home_free(home);
}

/* [KS-AUD-2] the key on another volume: [audit] key_file. */
static void
test_key_file_config(void)
{
	struct cf_ks_audit_report rep;
	struct cf_ks_home *home = NULL;
	char conf[8192], keydir[4096], keyfile[4200];

	snprintf(home_dir, sizeof(home_dir), "%s/home", cf_test_tmpdir());
	snprintf(keydir, sizeof(keydir), "%s/keys", cf_test_tmpdir());
	snprintf(keyfile, sizeof(keyfile), "%s/audit.key", keydir);
	CHECK(mkdir(home_dir, 0700) == 0);
	CHECK(mkdir(keydir, 0700) == 0);
	snprintf(conf, sizeof(conf), "[audit]\nkey_file = %s\n", keyfile);
	CHECK_RC(cf_test_write_file(hpath("coffer.conf"), conf, strlen(conf)),
	    0);
	home = reopen_home(NULL);
	CHECK(home != NULL);
	CHECK_RC(add_records(home, 1, 3), 0);
	CHECK(file_size(keyfile) == 32);
	CHECK(file_mode(keyfile) == 0600);
	CHECK(file_size(hpath("audit/audit.key")) == -1);
	CHECK_RC(verify(home, &rep), 0);
	CHECK(rep.records == 3);
	cf_ks_home_free(home);

	/* A relative key_file is refused. */
	snprintf(conf, sizeof(conf), "[audit]\nkey_file = keys/audit.key\n");
	CHECK_RC(cf_test_write_file(hpath("coffer.conf"), conf, strlen(conf)),
	    0);
	home = reopen_home(NULL);
	CHECK(home != NULL);
	CHECK_RC(add_records(home, 4, 1), -EINVAL);
	CHECK(strstr(cf_ks_last_error(), "absolute") != NULL);
	cf_ks_home_free(home);
}

/* ---- foreach --------------------------------------------------------- */

/* [KS-AUD-50] */
static void
test_foreach(void)
{
	struct cf_ks_home *home = home_with_ten();
	struct collect c;

	CHECK(home != NULL);
	memset(&c, 0, sizeof(c));
	CHECK_RC(cf_ks_audit_foreach(home, NULL, collect_fn, &c), 0);
	CHECK(c.n == 10 && c.bad == 0);

	memset(&c, 0, sizeof(c));
	c.want = "\"tenant\":\"acme\"";
	CHECK_RC(cf_ks_audit_foreach(home, "acme", collect_fn, &c), 0);
	CHECK(c.n == 5 && c.bad == 0);

	memset(&c, 0, sizeof(c));
	CHECK_RC(cf_ks_audit_foreach(home, "acm", collect_fn, &c), 0);
	CHECK(c.n == 0);

	memset(&c, 0, sizeof(c));
	c.stop_at = 3;
	CHECK_RC(cf_ks_audit_foreach(home, NULL, collect_fn, &c), 7);
	CHECK(c.n == 3);

	/* A malformed line: shown unfiltered, reported when filtering. */
	CHECK_RC(append_bytes(hpath("audit/audit.log"),
	    "not json \"tenant\":\"acme\"\n"), 0);
	memset(&c, 0, sizeof(c));
	CHECK_RC(cf_ks_audit_foreach(home, NULL, collect_fn, &c), 0);
	CHECK(c.n == 11);
	memset(&c, 0, sizeof(c));
	c.want = "\"tenant\":\"acme\"";
	CHECK_RC(cf_ks_audit_foreach(home, "acme", collect_fn, &c), -EPROTO);
	CHECK(c.n == 5 && c.bad == 0);
	CHECK(strstr(cf_ks_last_error(), "line 11") != NULL);
	cf_ks_home_free(home);
}

/* ---- cf_ks_audit_parse_line ------------------------------------------ */


/* [KS-AUD-12] .. [KS-AUD-15] each rejected line otherwise has a good MAC. */
static void
test_parse_rejects(void)
{
	static const struct {
		const char *body;	/* the MAC is appended by mkline() */
		const char *tail;	/* appended after the MAC */
		int want;
	} cases[] = {
		{ BODY1 PREV0, "", 0 },				/* control */
		{ BODY1 ",\"tenant\":\"x\",\"n\":-3" PREV0, "", 0 },
		{ BODY1 PREV0, " ", -EPROTO },		/* trailing space */
		{ BODY1 PREV0, "\r", -EPROTO },
		{ " " BODY1 PREV0, "", -EPROTO },		/* leading sp */
		{ BODY1 ",\"x\":\"1\",\"x\":\"2\"" PREV0, "", -EPROTO },
		{ BODY1 ",\"seq\":1" PREV0, "", -EPROTO },	/* dup seq */
		{ BODY1 ",\"X\":\"1\"" PREV0, "", -EPROTO },	/* key case */
		{ BODY1 ",\"a\":1.5" PREV0, "", -EPROTO },	/* real */
		{ BODY1 ",\"a\":null" PREV0, "", -EPROTO },
		{ BODY1 ",\"a\":[1]" PREV0, "", -EPROTO },
		{ BODY1 ",\"a\":true" PREV0, "", -EPROTO },
		{ "{\"seq\":0,\"time\":\"t\",\"actor\":\"a\",\"event\":\"e\""
		    PREV0, "", -EPROTO },			/* seq < 1 */
		{ "{\"seq\":-1,\"time\":\"t\",\"actor\":\"a\",\"event\":\"e\""
		    PREV0, "", -EPROTO },
		{ "{\"seq\":\"1\",\"time\":\"t\",\"actor\":\"a\",\"event\":"
		    "\"e\"" PREV0, "", -EPROTO },
		{ "{\"seq\":1,\"time\":\"t\",\"actor\":\"a\"" PREV0, "",
		    -EPROTO },					/* no event */
		{ "{\"seq\":1,\"time\":1,\"actor\":\"a\",\"event\":\"e\""
		    PREV0, "", -EPROTO },
		{ "{\"seq\":1,\"time\":\"t\",\"actor\":\"a\",\"event\":\"e\","
		    "\"prev\":\"" ZERO_HEX "\",\"z\":1", "", -EPROTO },
		{ BODY1 ",\"prev\":\"0000000000000000000000000000000000000000"
		    "00000000000000000000000\"", "", -EPROTO },	/* 63 hex */
		/* prev in uppercase hex */
		{ BODY1 ",\"prev\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
		    "AAAAAAAAAAAAAAAAAAAAAAAA\"", "", -EPROTO },
		{ BODY1 ",\"t\":\"\\u0000\"" PREV0, "", -EPROTO }, /* NUL */
	};
	unsigned char key[32];
	char *line, *p, buf[512];
	size_t i;

	memset(key, 0x42, sizeof(key));
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		line = mkline(key, cases[i].body);
		snprintf(buf, sizeof(buf), "%s%s", line, cases[i].tail);
		free(line);
		if (parse(key, buf) != cases[i].want)
			printf("# case %zu: %s\n", i, buf);
		CHECK_RC(parse(key, buf), cases[i].want);
	}

	/* Empty; not JSON; no MAC at all. */
	CHECK_RC(cf_ks_audit_parse_line(key, "", 0, &(uint64_t){ 0 },
	    (unsigned char[32]){ 0 }, (unsigned char[32]){ 0 }), -EPROTO);
	CHECK_RC(parse(key, "hello"), -EPROTO);
	CHECK_RC(parse(key, "{}"), -EPROTO);
	CHECK_RC(parse(key, BODY1 PREV0 "}"), -EPROTO);

	/* The MAC not last: a valid line with a member after it. */
	line = mkline(key, BODY1 PREV0);
	CHECK(line != NULL);
	snprintf(buf, sizeof(buf), "%.*s,\"z\":1}", (int)strlen(line) - 1,
	    line);
	CHECK_RC(parse(key, buf), -EPROTO);
	/* A 63-hex MAC. */
	snprintf(buf, sizeof(buf), "%.*s\"}", (int)strlen(line) - 3, line);
	CHECK_RC(parse(key, buf), -EPROTO);
	/* The right MAC in uppercase. */
	snprintf(buf, sizeof(buf), "%s", line);
	for (p = strstr(buf, ",\"mac\":\"") + 8; *p != '"'; p++)
		if (*p >= 'a' && *p <= 'f')
			*p = (char)(*p - 'a' + 'A');
	CHECK(strcmp(buf, line) != 0);
	CHECK_RC(parse(key, buf), -EPROTO);
	/* A NUL byte in the middle, length counted past it. */
	snprintf(buf, sizeof(buf), "%s", line);
	buf[20] = '\0';
	CHECK_RC(cf_ks_audit_parse_line(key, buf, strlen(line),
	    &(uint64_t){ 0 }, (unsigned char[32]){ 0 },
	    (unsigned char[32]){ 0 }), -EPROTO);
	/* Wrong key: -EBADMSG, not -EPROTO. */
	key[0] ^= 1;
	CHECK_RC(parse(key, line), -EBADMSG);
	free(line);
}

/* [KS-AUD-12] 4096 bytes parse, 4097 do not, even with a good MAC. */
static void
test_parse_line_limit(void)
{
	unsigned char key[32];
	char *body, *line;
	size_t base, pad;

	memset(key, 0x42, sizeof(key));
	line = mkline(key, BODY1 ",\"p\":\"\"" PREV0);
	base = strlen(line);
	free(line);
	pad = 4096 - base;
	body = malloc(4200);
	CHECK(body != NULL);
	snprintf(body, 4200, BODY1 ",\"p\":\"%*s\"" PREV0, (int)pad, "");
	line = mkline(key, body);
	CHECK(strlen(line) == 4096);
	CHECK_RC(parse(key, line), 0);
	free(line);
	snprintf(body, 4200, BODY1 ",\"p\":\"%*s\"" PREV0, (int)pad + 1, "");
	line = mkline(key, body);
	CHECK(strlen(line) == 4097);
	CHECK_RC(parse(key, line), -EPROTO);
	free(line);
	free(body);
}

/* [KS-AUD-15] no single bit flip of a valid line is accepted. */
static void
test_parse_bit_flips(void)
{
	unsigned char key[32], prev[32], mac[32];
	char *line;
	size_t i, len;
	uint64_t seq;
	int b, rc;

	memset(key, 0x42, sizeof(key));
	line = mkline(key, BODY1 ",\"tenant\":\"acme\",\"n\":12" PREV0);
	len = strlen(line);
	CHECK_RC(parse(key, line), 0);
	for (i = 0; i < len; i++) {
		for (b = 0; b < 8; b++) {
			line[i] ^= (char)(1 << b);
			rc = cf_ks_audit_parse_line(key, line, len, &seq, prev,
			    mac);
			line[i] ^= (char)(1 << b);
			CHECK(rc == -EPROTO || rc == -EBADMSG);
		}
	}
	/* Every prefix (a torn line) is rejected too. */
	for (i = 0; i < len; i++)
		CHECK_RC(cf_ks_audit_parse_line(key, line, i, &seq, prev, mac) <
		    0, 1);
	free(line);
}

/* ---- known answers: tests/vectors/audit-v1.json ---------------------- */

static int
hex_eq(const char *hex, const unsigned char *bin, size_t len)
{
	char h[129];

	if (len > 64)
		return 0;
	sodium_bin2hex(h, sizeof(h), bin, len);
	return strcmp(h, hex) == 0;
}

/* [KS-AUD-5] .. [KS-AUD-11] [KS-AUD-20] [KS-AUD-21] */
static void
test_known_answers(void)
{
	struct cf_ks_audit_report rep;
	struct cf_ks_home *home;
	json_error_t jerr;
	json_t *v, *recs, *r, *flds, *fl, *rej;
	unsigned char *key, *log, *head;
	unsigned char prev[32], mac[32], want[32], ref[32], last[32];
	char *expect;
	size_t keylen, loglen, headlen, i, j, elen = 0, ml;
	const char *line, *hl;
	uint64_t seq;

	v = json_load_file(cf_test_vector_path("audit-v1.json"),
	    JSON_REJECT_DUPLICATES, &jerr);
	CHECK(v != NULL);
	CHECK(json_integer_value(json_object_get(v, "version")) == 1);
	key = cf_test_unhex(json_string_value(json_object_get(v, "key")),
	    &keylen);
	CHECK(key != NULL && keylen == 32);
	CHECK(strcmp(json_string_value(json_object_get(v, "domain")),
	    "coffer-audit-v1") == 0);
	recs = json_object_get(v, "records");
	CHECK(json_array_size(recs) >= 4);
	expect = calloc(1, 65536);
	CHECK(expect != NULL);

	/* 1. Each line, checked by the parser and by a reference MAC. */
	memset(last, 0, sizeof(last));
	json_array_foreach(recs, i, r) {
		line = json_string_value(json_object_get(r, "line"));
		CHECK(line != NULL);
		ml = (size_t)json_integer_value(json_object_get(r,
		    "mac_input_len"));
		CHECK(ml + 74 == strlen(line));
		CHECK(memcmp(line + ml, ",\"mac\":\"", 8) == 0);
		CHECK(sodium_hex2bin(want, 32, json_string_value(
		    json_object_get(r, "mac")), 64, NULL, NULL, NULL) == 0);
		ref_mac(ref, key, "coffer-audit-v1", line, ml);
		CHECK(sodium_memcmp(ref, want, 32) == 0);
		CHECK(hex_eq(json_string_value(json_object_get(r, "prev")),
		    last, 32));
		CHECK_RC(cf_ks_audit_parse_line(key, line, strlen(line), &seq,
		    prev, mac), 0);
		CHECK(seq == i + 1);
		CHECK(sodium_memcmp(mac, want, 32) == 0);
		CHECK(sodium_memcmp(prev, last, 32) == 0);
		memcpy(last, mac, 32);
		CHECK(elen + strlen(line) + 2 < 65536);
		memcpy(expect + elen, line, strlen(line));
		elen += strlen(line);
		expect[elen++] = '\n';
	}

	/* 2. The anchor after the last record, with a reference hmac. */
	hl = json_string_value(json_object_get(json_object_get(v, "head"),
	    "line"));
	CHECK(hl != NULL);
	ml = strlen(hl) - 76;
	CHECK(memcmp(hl + ml, ",\"hmac\":\"", 9) == 0);
	ref_mac(ref, key, "coffer-audit-head-v1", hl, ml);
	CHECK(hex_eq(json_string_value(json_object_get(json_object_get(v,
	    "head"), "hmac")), ref, 32));
	CHECK(memcmp(hl + ml + 9, json_string_value(json_object_get(
	    json_object_get(v, "head"), "hmac")), 64) == 0);

	/* 3. The writer reproduces every byte from the same inputs. */
	home = open_home();
	CHECK(home != NULL);
	setenv("COFFER_NOW", json_string_value(json_object_get(v, "time")), 1);
	cf_ks_home_set_actor(home, json_string_value(json_object_get(v,
	    "actor")));
	CHECK_RC(cf_test_write_file(hpath("audit/audit.key"), key, 32), 0);
	CHECK(chmod(hpath("audit/audit.key"), 0600) == 0);
	json_array_foreach(recs, i, r) {
		struct cf_ks_audit_field f[8];

		flds = json_object_get(r, "fields");
		CHECK(json_array_size(flds) <= 8);
		json_array_foreach(flds, j, fl) {
			f[j].key = json_string_value(json_object_get(fl,
			    "key"));
			f[j].str = json_string_value(json_object_get(fl,
			    "str"));
			f[j].num = json_integer_value(json_object_get(fl,
			    "num"));
		}
		CHECK_RC(cf_ks_audit_append(home, json_string_value(
		    json_object_get(r, "event")), f, json_array_size(flds)), 0);
	}
	log = cf_test_read_file(hpath("audit/audit.log"), &loglen);
	CHECK(log != NULL);
	CHECK(loglen == elen);
	CHECK(memcmp(log, expect, elen) == 0);
	head = cf_test_read_file(hpath("audit/head"), &headlen);
	CHECK(head != NULL);
	CHECK(headlen == strlen(hl));
	CHECK(memcmp(head, hl, headlen) == 0);
	CHECK_RC(verify(home, &rep), 0);
	CHECK(rep.records == json_array_size(recs));
	free(log);
	free(head);
	cf_ks_home_free(home);

	/* 4. Lines that must be refused, with the code they must get. */
	rej = json_object_get(v, "rejects");
	CHECK(json_array_size(rej) > 0);
	json_array_foreach(rej, i, r) {
		const char *want_rc = json_string_value(json_object_get(r,
		    "rc"));

		line = json_string_value(json_object_get(r, "line"));
		CHECK(line != NULL && want_rc != NULL);
		CHECK_RC(cf_ks_audit_parse_line(key, line, strlen(line), &seq,
		    prev, mac), strcmp(want_rc, "EBADMSG") == 0 ? -EBADMSG :
		    -EPROTO);
	}
	free(expect);
	free(key);
	json_decref(v);
}

static const struct cf_test_case cases[] = {
	CF_TEST(test_ten_records_verify),
	CF_TEST(test_record_layout),
	CF_TEST(test_damage_edit),
	CF_TEST(test_damage_insert),
	CF_TEST(test_damage_delete),
	CF_TEST(test_damage_reorder),
	CF_TEST(test_damage_truncate_partial),
	CF_TEST(test_damage_remove_last),
	CF_TEST(test_damage_head),
	CF_TEST(test_damage_prev_splice),
	CF_TEST(test_damage_long_line),
	CF_TEST(test_damage_anchor_forged),
	CF_TEST(test_damage_wrong_key),
	CF_TEST(test_missing_key),
	CF_TEST(test_append_after_torn_write),
	CF_TEST(test_anchor_behind),
	CF_TEST(test_first_record_crash),
	CF_TEST(test_first_append_anchors_empty_log),
	CF_TEST(test_append_refuses_truncated),
	CF_TEST(test_append_refuses_edited_tail),
	CF_TEST(test_concurrent_appends),
	CF_TEST(test_field_validation),
	CF_TEST(test_line_limit_append),
	CF_TEST(test_key_file_config),
	CF_TEST(test_foreach),
	CF_TEST(test_parse_rejects),
	CF_TEST(test_parse_line_limit),
	CF_TEST(test_parse_bit_flips),
	CF_TEST(test_known_answers),
};

CF_TEST_MAIN(cases)
