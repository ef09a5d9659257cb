/*
 * bk_store_s3.c - the S3 storage backend (docs/s3.md): a repository
 * under s3://bucket/prefix on any S3-compatible object store (AWS S3,
 * Ceph RGW, MinIO), with the same object layout as the local backend
 * (docs/format/repository.md: config, data/XX/<id>, index/<id>,
 * snapshots/<id>, locks/<id>), each key prefixed with "prefix/".
 *
 * Requests go through libcurl easy handles kept in a small pool: a
 * handle keeps its connections alive between requests (curl_easy_reset
 * keeps the connection cache), and each thread takes its own handle,
 * so the ops may run on many threads at once.  Requests are signed by
 * libcurl's SigV4 (CURLOPT_AWS_SIGV4).  Every request carries
 * x-amz-content-sha256 with the real SHA-256 of its body: libcurl 7.88
 * signs that header as given, and the server recomputes the hash, so a
 * body corrupted in transit is rejected (XAmzContentSHA256Mismatch)
 * and retried.  Responses are parsed with expat.
 *
 * Transient failures (5xx, 429/SlowDown, connection errors, timeouts,
 * a body hash mismatch) are retried with exponential backoff and full
 * jitter, within a bounded number of attempts and a bounded total
 * time.  Every op is idempotent: objects are immutable and named by
 * content, so replaying a PUT stores the same bytes.
 *
 * Objects larger than the part size (COFFER_S3_PART_SIZE, 64 MiB) go up
 * as a multipart upload, COFFER_S3_CONNECTIONS parts at once; cleanup
 * (prune) aborts uploads of repository keys that killed writers left
 * and that are a day old.  In versioned buckets deletes remove every
 * version by id, in batches.
 *
 * What it deliberately does not do: resume a multipart upload (no caller
 * puts the same object twice), a request-level thread pool (callers
 * bring their threads; a multipart upload or a batch delete starts a
 * few threads of its own for its duration), or any logging: errors are
 * returned as -errno, and secrets never leave this file (curl's verbose
 * mode stays off).
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <expat.h>
#include <sodium.h>

#include "bk_int.h"

#define S3_POOL_MAX 16U
#define S3_ERRBODY_MAX 16384U
#define S3_LIST_BODY_MAX (8U << 20)	/* one ListObjectsV2 page */
#define S3_LIST_PAGE 1000
#define S3_URL_MAX 4096U
#define S3_TEXT_MAX 2048U		/* one XML leaf (key, token) */
#define S3_ATTEMPTS_DEFAULT 8U
#define S3_CONNS_DEFAULT 4L		/* COFFER_S3_CONNECTIONS */
#define S3_PART_SIZE_DEFAULT (64L << 20)
#define S3_PART_SIZE_MIN (5L << 20)		/* S3's minimum part */
#define S3_PART_SIZE_MAX (1024L << 20)
#define S3_RETRY_SECONDS_DEFAULT 120L
#define S3_BACKOFF_BASE_MS 100L
#define S3_BACKOFF_CAP_MS 10000L
#define S3_EMPTY_SHA256 \
	"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

struct s3 {
	char *bucket_url;	/* ".../bucket" (path) or "https://bucket.host" */
	char *prefix;		/* "" or "a/b/" (always ends with '/') */
	char *sigv4;		/* "aws:amz:REGION:s3" */
	char *access_key;
	char *secret;		/* wiped on close */
	char *token_hdr;	/* "x-amz-security-token: ..." or NULL; wiped */
	char *ca_file;		/* NULL: the system's CA bundle */
	struct curl_slist *resolve;	/* CURLOPT_RESOLVE entries, or NULL */
	unsigned max_attempts;
	size_t part_size;	/* multipart above this many bytes */
	long retry_ms;		/* total time budget of one op's retries */
	/* Object Lock retention set on every PUT (docs/s3.md). */
	char lock_mode[16];	/* "", "GOVERNANCE" or "COMPLIANCE" */
	long lock_days;		/* retain-until = now + lock_days... */
	int64_t lock_max;	/* ...but never later than this (0: no cap) */
	int versioning;		/* -1 unknown, 0 off, 1 on (Object Lock too) */
	int objlock;		/* the bucket may hold locked versions */
	unsigned conns;		/* parallel requests of one op (parts, HEADs) */
	unsigned uploads_page;	/* max-uploads of ListMultipartUploads */
	pthread_mutex_t lock;	/* protects pool, pool_fd and npool */
	CURL *pool[S3_POOL_MAX];
	curl_socket_t pool_fd[S3_POOL_MAX];	/* its connection's socket */
	unsigned npool;
	/* Bandwidth limits of this store, all transfers together. */
	struct s3_rate {
		pthread_mutex_t m;
		double bps;	/* bytes per second; 0: no limit */
		double next;	/* monotonic s when the budget is free */
	} up, down;
};

/* One HTTP request and its response. */
struct s3_req {
	const char *method;		/* GET, PUT, HEAD, DELETE */
	char url[S3_URL_MAX];
	const unsigned char *body;	/* PUT body */
	size_t bodylen;
	int if_none_match;		/* PUT: If-None-Match: * */
	const char *checksum;		/* x-amz-checksum-sha256 value, or NULL */
	char body_hex[65];		/* PUT: the body's SHA-256 in hex, if
					 * known ([BK-LAY-3]), else "" */
	int lock;			/* send the Object Lock headers */
	int ranged;			/* Range: bytes=off-(off+fixedlen-1) */
	uint64_t range_off;
	/* Response body, either into a growing buffer of at most outmax... */
	unsigned char *out;
	size_t outlen, outcap, outmax;
	/* ...or into the caller's buffer of exactly fixedlen bytes. */
	unsigned char *fixed;
	size_t fixedlen, got;
	uint64_t skip;			/* bytes to drop (server ignored Range) */
	int started, overflow, extra;
	curl_off_t seen_up, seen_down;	/* bytes counted against the limits */
	struct s3 *s;			/* for the limits */
	char err[S3_ERRBODY_MAX];	/* error body (XML), NUL-terminated */
	size_t errlen;
	long status;
	curl_off_t clen;		/* HEAD: Content-Length */
	char etag[128];			/* ETag response header, quoted */
	char version_id[128];		/* x-amz-version-id */
	char retain_until[64];		/* x-amz-object-lock-retain-until-date */
	int legal_hold;			/* x-amz-object-lock-legal-hold: ON */
	char date[64];			/* Date: the server's clock */
	unsigned attempts;
	CURL *h;
	curl_socket_t fd;		/* h's socket (ack_now), or BAD */
};

static pthread_once_t s3_once = PTHREAD_ONCE_INIT;
static CURLcode s3_global_rc;

static void
s3_global_init(void)
{
	s3_global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ---- small helpers ------------------------------------------------------- */

static void
free_secret(char *s)
{
	if (s == NULL)
		return;
	sodium_memzero(s, strlen(s));
	free(s);
}

static long
now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long)ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static void
sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Appends s to buf (cap bytes) at *pos; -ENAMETOOLONG if it does not fit. */
static int
cat(char *buf, size_t cap, size_t *pos, const char *s)
{
	size_t n = strlen(s);

	if (n >= cap - *pos)
		return -ENAMETOOLONG;
	memcpy(buf + *pos, s, n + 1);
	*pos += n;
	return 0;
}

/*
 * Appends s percent-encoded as SigV4's canonical form wants it:
 * unreserved characters as they are, everything else %XX (upper case);
 * '/' kept if keep_slash (paths), encoded otherwise (query values).
 */
static int
cat_enc(char *buf, size_t cap, size_t *pos, const char *s, int keep_slash)
{
	static const char hex[] = "0123456789ABCDEF";
	char t[4];

	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;
		int rc;

		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		    (c >= '0' && c <= '9') || c == '-' || c == '.' ||
		    c == '_' || c == '~' || (c == '/' && keep_slash)) {
			t[0] = (char)c;
			t[1] = '\0';
		} else {
			t[0] = '%';
			t[1] = hex[c >> 4];
			t[2] = hex[c & 15];
			t[3] = '\0';
		}
		rc = cat(buf, cap, pos, t);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* The key (under the prefix) of an object: "prefix/data/ab/<id>". */
static int
obj_key(const struct s3 *s, enum cf_bk_kind kind, const char *name,
    char *key, size_t cap)
{
	int n;

	switch (kind) {
	case CF_BK_KIND_PACK:
		n = snprintf(key, cap, "%sdata/%.2s/%s", s->prefix, name, name);
		break;
	case CF_BK_KIND_INDEX:
		n = snprintf(key, cap, "%sindex/%s", s->prefix, name);
		break;
	case CF_BK_KIND_SNAPSHOT:
		n = snprintf(key, cap, "%ssnapshots/%s", s->prefix, name);
		break;
	case CF_BK_KIND_LOCK:
		n = snprintf(key, cap, "%slocks/%s", s->prefix, name);
		break;
	case CF_BK_KIND_CONFIG:
		n = snprintf(key, cap, "%sconfig", s->prefix);
		break;
	default:
		return -EINVAL;
	}
	if (n < 0 || (size_t)n >= cap)
		return -ENAMETOOLONG;
	return 0;
}

/* The request URL of an object. */
static int
obj_url(const struct s3 *s, enum cf_bk_kind kind, const char *name,
    struct s3_req *r)
{
	char key[1024];
	size_t pos = 0;
	int rc;

	rc = obj_key(s, kind, name, key, sizeof(key));
	if (rc < 0)
		return rc;
	rc = cat(r->url, sizeof(r->url), &pos, s->bucket_url);
	if (rc == 0)
		rc = cat(r->url, sizeof(r->url), &pos, "/");
	if (rc == 0)
		rc = cat_enc(r->url, sizeof(r->url), &pos, key, 1);
	return rc;
}

/* ---- the handle pool ----------------------------------------------------- */

/* A handle, and in *fd the socket of the connection it keeps (or BAD). */
static CURL *
pool_get(struct s3 *s, curl_socket_t *fd)
{
	CURL *h = NULL;

	*fd = CURL_SOCKET_BAD;
	pthread_mutex_lock(&s->lock);
	if (s->npool > 0) {
		h = s->pool[--s->npool];
		*fd = s->pool_fd[s->npool];
	}
	pthread_mutex_unlock(&s->lock);
	if (h == NULL)
		h = curl_easy_init();
	return h;
}

static void
pool_put(struct s3 *s, CURL *h, curl_socket_t fd)
{
	pthread_mutex_lock(&s->lock);
	if (s->npool < S3_POOL_MAX) {
		s->pool_fd[s->npool] = fd;
		s->pool[s->npool++] = h;
		h = NULL;
	}
	pthread_mutex_unlock(&s->lock);
	if (h != NULL)
		curl_easy_cleanup(h);
}

/* ---- one request --------------------------------------------------------- */

static size_t
s3_write(char *p, size_t sz, size_t n, void *arg)
{
	struct s3_req *r = arg;
	size_t len = sz * n, take;
	long code = 0;

	curl_easy_getinfo(r->h, CURLINFO_RESPONSE_CODE, &code);
	if (code >= 300) {
		take = sizeof(r->err) - 1 - r->errlen;
		if (take > len)
			take = len;
		memcpy(r->err + r->errlen, p, take);
		r->errlen += take;
		r->err[r->errlen] = '\0';
		return len;
	}
	if (r->fixed != NULL) {
		if (!r->started && code == 200)
			r->skip = r->range_off;	/* the whole object came */
		r->started = 1;
		take = r->skip < len ? (size_t)r->skip : len;
		r->skip -= take;
		p += take;
		len -= take;
		if (len > r->fixedlen - r->got) {
			/* More than asked for: stop the transfer. */
			take = r->fixedlen - r->got;
			memcpy(r->fixed + r->got, p, take);
			r->got += take;
			r->extra = 1;
			return 0;
		}
		memcpy(r->fixed + r->got, p, len);
		r->got += len;
		return sz * n;
	}
	if (len > r->outmax - r->outlen) {
		r->overflow = 1;
		return 0;
	}
	if (r->outlen + len > r->outcap) {
		size_t cap = r->outcap > 0 ? r->outcap : 65536;
		unsigned char *b;

		while (cap < r->outlen + len)
			cap *= 2;
		if (cap > r->outmax)
			cap = r->outmax;
		b = realloc(r->out, cap + 1);
		if (b == NULL)
			return 0;
		r->out = b;
		r->outcap = cap;
	}
	memcpy(r->out + r->outlen, p, len);
	r->outlen += len;
	return len;
}

/* Copies the trimmed value of header line p (name of nlen bytes). */
static void
hdr_value(const char *p, size_t len, size_t nlen, char *dst, size_t cap)
{
	size_t i;

	for (i = nlen; i < len && (p[i] == ' ' || p[i] == '\t'); i++)
		;
	while (len > i && (p[len - 1] == '\r' || p[len - 1] == '\n' ||
	    p[len - 1] == ' '))
		len--;
	if (len - i < cap) {
		memcpy(dst, p + i, len - i);
		dst[len - i] = '\0';
	}
}

/* "2026-11-24T18:30:00[.000]Z" as seconds since the epoch; -1 if bad. */
static int64_t
parse_iso8601(const char *v)
{
	struct tm tm;
	int y, mo, d, h, mi, sec;

	if (sscanf(v, "%4d-%2d-%2dT%2d:%2d:%2d", &y, &mo, &d, &h, &mi,
	    &sec) != 6)
		return -1;
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec;
	return (int64_t)timegm(&tm);
}

/*
 * The retain-until date of a PUT now: now + lock_days, capped by
 * lock_max; 0 if no retention is to be set.
 */
static int64_t
lock_until_now(const struct s3 *s)
{
	int64_t until;

	if (s->lock_mode[0] == '\0')
		return 0;
	until = (int64_t)time(NULL) + (int64_t)s->lock_days * 86400;
	if (s->lock_max > 0 && s->lock_max < until)
		until = s->lock_max;
	return until > (int64_t)time(NULL) ? until : 0;
}

/*
 * Acknowledges the response's first bytes at once.  A server that
 * writes the headers and the body of a response separately with Nagle's
 * algorithm on (Ceph RGW) holds the body until the headers are
 * acknowledged, and on a kept-alive connection Linux delays that ACK
 * (it waits to piggyback it on our next request): every GET with a body
 * took 40-45 ms instead of 1-3 ms.  Setting TCP_QUICKACK sends the
 * pending ACK now.  Best effort: a failure only costs the delay.
 */
static void
ack_now(curl_socket_t fd)
{
	int one = 1;

	if (fd != CURL_SOCKET_BAD)
		(void)setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one,
		    sizeof(one));
}

/*
 * libcurl tells the socket of a reused connection only after a transfer
 * (CURLINFO_ACTIVESOCKET), so the request learns it here when a new
 * connection is made, and the pool keeps it with the handle.
 */
static int
s3_sockopt(void *arg, curl_socket_t fd, curlsocktype purpose)
{
	struct s3_req *r = arg;

	if (purpose == CURLSOCKTYPE_IPCXN)
		r->fd = fd;
	return CURL_SOCKOPT_OK;
}

/* Keeps the ETag header (multipart parts are completed by ETag). */
static size_t
s3_header(char *p, size_t sz, size_t n, void *arg)
{
	struct s3_req *r = arg;
	size_t len = sz * n;

	if (len > 5 && strncasecmp(p, "http/", 5) == 0)
		ack_now(r->fd);	/* the status line comes first */
	if (len > 5 && strncasecmp(p, "etag:", 5) == 0)
		hdr_value(p, len, 5, r->etag, sizeof(r->etag));
	else if (len > 5 && strncasecmp(p, "date:", 5) == 0)
		hdr_value(p, len, 5, r->date, sizeof(r->date));
	else if (len > 17 && strncasecmp(p, "x-amz-version-id:", 17) == 0)
		hdr_value(p, len, 17, r->version_id, sizeof(r->version_id));
	else if (len > 37 && strncasecmp(p,
	    "x-amz-object-lock-retain-until-date:", 36) == 0)
		hdr_value(p, len, 36, r->retain_until,
		    sizeof(r->retain_until));
	else if (len > 30 && strncasecmp(p,
	    "x-amz-object-lock-legal-hold:", 29) == 0) {
		char v[8] = "";

		hdr_value(p, len, 29, v, sizeof(v));
		r->legal_hold = strcasecmp(v, "ON") == 0;
	}
	return sz * n;
}

/*
 * Charges n bytes to a limit and sleeps until they fit: a shared virtual
 * clock advances n / bps per charge, with at most 1 s of unused budget
 * saved up, so every transfer of the store together stays under bps.
 */
static void
rate_charge(struct s3_rate *rt, curl_off_t n)
{
	struct timespec ts;
	double now, wait;

	if (rt->bps <= 0 || n <= 0)
		return;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	now = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
	pthread_mutex_lock(&rt->m);
	if (rt->next < now - 1.0)
		rt->next = now - 1.0;
	rt->next += (double)n / rt->bps;
	wait = rt->next - now;
	pthread_mutex_unlock(&rt->m);
	if (wait > 0)
		sleep_ms((long)(wait * 1000.0) + 1);
}

/* libcurl's progress callback: charges what moved since the last call. */
static int
s3_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow,
    curl_off_t ultotal, curl_off_t ulnow)
{
	struct s3_req *r = arg;

	(void)dltotal;
	(void)ultotal;
	if (ulnow > r->seen_up) {
		rate_charge(&r->s->up, ulnow - r->seen_up);
		r->seen_up = ulnow;
	}
	if (dlnow > r->seen_down) {
		rate_charge(&r->s->down, dlnow - r->seen_down);
		r->seen_down = dlnow;
	}
	return 0;
}

/* Sets up h for r.  *hdrs is the header list to free after the call. */
static int
s3_setup(struct s3 *s, struct s3_req *r, struct curl_slist **hdrs)
{
	unsigned char sha[crypto_hash_sha256_BYTES];
	char line[128], hex[crypto_hash_sha256_BYTES * 2 + 1];
	struct curl_slist *l = NULL, *t;
	CURL *h = r->h;
	int ok = 1;

	*hdrs = NULL;
	curl_easy_reset(h);	/* keeps the connection cache */
	ok &= curl_easy_setopt(h, CURLOPT_URL, r->url) == CURLE_OK;
	ok &= curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https") ==
	    CURLE_OK;
	ok &= curl_easy_setopt(h, CURLOPT_VERBOSE, 0L) == CURLE_OK;
	ok &= curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L) == CURLE_OK;
	ok &= curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK;
	ok &= curl_easy_setopt(h, CURLOPT_AWS_SIGV4, s->sigv4) == CURLE_OK;
	ok &= curl_easy_setopt(h, CURLOPT_USERNAME, s->access_key) ==
	    CURLE_OK;
	ok &= curl_easy_setopt(h, CURLOPT_PASSWORD, s->secret) == CURLE_OK;
	ok &= curl_easy_setopt(h, CURLOPT_SSLVERSION,
	    (long)CURL_SSLVERSION_TLSv1_2) == CURLE_OK;
	ok &= curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L) == CURLE_OK;
	ok &= curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L) == CURLE_OK;
	if (s->ca_file != NULL)
		ok &= curl_easy_setopt(h, CURLOPT_CAINFO, s->ca_file) ==
		    CURLE_OK;
	if (s->resolve != NULL)
		ok &= curl_easy_setopt(h, CURLOPT_RESOLVE, s->resolve) ==
		    CURLE_OK;
	ok &= curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L) == CURLE_OK;
	/* A stalled transfer (< 1 byte/s for 60 s) is a timeout. */
	ok &= curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L) == CURLE_OK;
	ok &= curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, 60L) == CURLE_OK;
	ok &= curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L) == CURLE_OK;
	ok &= curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, s3_write) ==
	    CURLE_OK;
	ok &= curl_easy_setopt(h, CURLOPT_WRITEDATA, r) == CURLE_OK;
	ok &= curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, s3_header) ==
	    CURLE_OK;
	ok &= curl_easy_setopt(h, CURLOPT_HEADERDATA, r) == CURLE_OK;
	ok &= curl_easy_setopt(h, CURLOPT_SOCKOPTFUNCTION, s3_sockopt) ==
	    CURLE_OK;
	ok &= curl_easy_setopt(h, CURLOPT_SOCKOPTDATA, r) == CURLE_OK;
	r->s = s;
	r->seen_up = r->seen_down = 0;
	if (s->up.bps > 0 || s->down.bps > 0) {
		ok &= curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION,
		    s3_progress) == CURLE_OK;
		ok &= curl_easy_setopt(h, CURLOPT_XFERINFODATA, r) == CURLE_OK;
		ok &= curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L) == CURLE_OK;
	}
	if (strcmp(r->method, "HEAD") == 0) {
		ok &= curl_easy_setopt(h, CURLOPT_NOBODY, 1L) == CURLE_OK;
	} else if (strcmp(r->method, "PUT") == 0 ||
	    strcmp(r->method, "POST") == 0) {
		/*
		 * POSTFIELDS with a custom method sends the buffer as it is
		 * (no read callback), which also makes a retry trivial.
		 */
		ok &= curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, r->method) ==
		    CURLE_OK;
		ok &= curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE,
		    (curl_off_t)r->bodylen) == CURLE_OK;
		ok &= curl_easy_setopt(h, CURLOPT_POSTFIELDS,
		    r->bodylen > 0 ? (const char *)r->body : "") == CURLE_OK;
	} else if (strcmp(r->method, "GET") != 0) {
		ok &= curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, r->method) ==
		    CURLE_OK;
	}
	if (!ok)
		return -EIO;

	if (r->body_hex[0] != '\0') {
		memcpy(hex, r->body_hex, sizeof(hex));	/* s3_put knew it */
	} else if (r->bodylen > 0) {
		cf_bk_sha256(r->body, r->bodylen, sha);
		sodium_bin2hex(hex, sizeof(hex), sha, sizeof(sha));
	} else {
		memcpy(hex, S3_EMPTY_SHA256, sizeof(hex));
	}
	snprintf(line, sizeof(line), "x-amz-content-sha256: %s", hex);
	t = curl_slist_append(l, line);
	if (t == NULL)
		goto nomem;
	l = t;
	if (strcmp(r->method, "PUT") == 0) {
		t = curl_slist_append(l, "Content-Type: application/octet-stream");
		if (t == NULL)
			goto nomem;
		l = t;
	}
	/*
	 * No "Expect:" override here: libcurl 7.88 would sign the empty
	 * header and the server then rejects the signature.  Large PUTs
	 * do the 100-continue round trip, which also stops a refused
	 * upload before its body is sent.
	 */
	if (r->lock && lock_until_now(s) > 0) {
		time_t until = (time_t)lock_until_now(s);
		struct tm tm;
		char date[40];

		gmtime_r(&until, &tm);
		strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", &tm);
		snprintf(line, sizeof(line), "x-amz-object-lock-mode: %s",
		    s->lock_mode);
		t = curl_slist_append(l, line);
		if (t == NULL)
			goto nomem;
		l = t;
		snprintf(line, sizeof(line),
		    "x-amz-object-lock-retain-until-date: %s", date);
		t = curl_slist_append(l, line);
		if (t == NULL)
			goto nomem;
		l = t;
	}
	if (r->checksum != NULL) {
		/* DeleteObjects needs a body checksum (Content-MD5 or this). */
		snprintf(line, sizeof(line), "x-amz-checksum-sha256: %s",
		    r->checksum);
		t = curl_slist_append(l, line);
		if (t == NULL)
			goto nomem;
		l = t;
		t = curl_slist_append(l, "x-amz-sdk-checksum-algorithm: SHA256");
		if (t == NULL)
			goto nomem;
		l = t;
	}
	if (r->if_none_match) {
		t = curl_slist_append(l, "If-None-Match: *");
		if (t == NULL)
			goto nomem;
		l = t;
	}
	if (r->ranged) {
		snprintf(line, sizeof(line), "Range: bytes=%llu-%llu",
		    (unsigned long long)r->range_off,
		    (unsigned long long)(r->range_off + r->fixedlen - 1));
		t = curl_slist_append(l, line);
		if (t == NULL)
			goto nomem;
		l = t;
	}
	if (s->token_hdr != NULL) {
		t = curl_slist_append(l, s->token_hdr);
		if (t == NULL)
			goto nomem;
		l = t;
	}
	*hdrs = l;
	if (curl_easy_setopt(h, CURLOPT_HTTPHEADER, l) != CURLE_OK)
		return -EIO;
	return 0;
nomem:
	curl_slist_free_all(l);
	return -ENOMEM;
}

/* ---- XML (list pages, upload lists, delete results, error bodies) -------- */

struct s3_ent {
	char *key;
	uint64_t size;
	char *vid;		/* ListObjectVersions, DeleteObjects: or NULL;
				 * ListMultipartUploads: the upload id */
	int marker;		/* ListObjectVersions: a <DeleteMarker> */
	int64_t time;		/* ListMultipartUploads: Initiated; else -1 */
};

struct s3_xml {
	char text[S3_TEXT_MAX];
	size_t textlen;
	int toolong;
	int in_contents;	/* <Contents>, <Version> or <DeleteMarker> */
	int in_version;		/* <Version> or <DeleteMarker> */
	int in_upload;		/* ListMultipartUploads' <Upload> */
	char *cur_key;
	char *cur_vid;
	int64_t cur_time;	/* <Initiated> of the <Upload>, or -1 */
	uint64_t cur_size;
	int have_size;
	struct s3_ent *ents;
	size_t nents, capents;
	int truncated;
	char *next_token;
	char code[64];
	char upload_id[256];
	int in_result;		/* inside <DeleteResult> */
	int in_error;		/* DeleteResult: one key's <Error> */
	char cur_code[64];
	struct s3_ent *errs;	/* key and size 1 if AccessDenied, else 0 */
	size_t nerrs, caperrs;
	char status[32];	/* GetBucketVersioning's <Status> */
	char root[32];		/* the document's first element */
	char *next_key;		/* NextKeyMarker (versions, uploads) */
	char *next_vid;		/* NextVersionIdMarker, NextUploadIdMarker */
	int bad;
};

static void XMLCALL
xml_start(void *arg, const XML_Char *el, const XML_Char **attr)
{
	struct s3_xml *x = arg;

	(void)attr;
	x->textlen = 0;
	x->toolong = 0;
	if (x->root[0] == '\0')
		snprintf(x->root, sizeof(x->root), "%s", el);
	if (strcmp(el, "DeleteResult") == 0)
		x->in_result = 1;
	if (strcmp(el, "Upload") == 0) {
		x->in_upload = 1;
		free(x->cur_key);
		x->cur_key = NULL;
		free(x->cur_vid);
		x->cur_vid = NULL;
		x->cur_time = -1;
		return;
	}
	/* A top-level <Error> is an error body, not one key's error. */
	if (strcmp(el, "Contents") == 0 || strcmp(el, "Version") == 0 ||
	    strcmp(el, "DeleteMarker") == 0 ||
	    (x->in_result && strcmp(el, "Error") == 0)) {
		x->in_version = strcmp(el, "Version") == 0 ||
		    strcmp(el, "DeleteMarker") == 0;
		x->in_contents = x->in_version || strcmp(el, "Contents") == 0;
		x->in_error = !x->in_contents;
		free(x->cur_key);
		x->cur_key = NULL;
		free(x->cur_vid);
		x->cur_vid = NULL;
		x->have_size = 0;
		x->cur_code[0] = '\0';
	}
}

/* Appends an entry to a growing array; -ENOMEM into x->bad. */
static void
ent_push(struct s3_xml *x, struct s3_ent **v, size_t *n, size_t *cap,
    char *key, uint64_t size, char *vid, int marker, int64_t time)
{
	if (*n == *cap) {
		size_t c = *cap ? *cap * 2 : 64;
		struct s3_ent *e = realloc(*v, c * sizeof(*e));

		if (e == NULL) {
			free(key);
			free(vid);
			x->bad = -ENOMEM;
			return;
		}
		*v = e;
		*cap = c;
	}
	(*v)[*n].key = key;
	(*v)[*n].size = size;
	(*v)[*n].vid = vid;
	(*v)[*n].marker = marker;
	(*v)[*n].time = time;
	(*n)++;
}

/* A copy of the current leaf's text; NULL if too long (or no memory). */
static char *
xml_dup(struct s3_xml *x)
{
	char *d;

	if (x->toolong)
		return NULL;
	d = strdup(x->text);
	if (d == NULL)
		x->bad = -ENOMEM;
	return d;
}

static void XMLCALL
xml_text(void *arg, const XML_Char *s, int len)
{
	struct s3_xml *x = arg;

	if (len < 0 || (size_t)len >= sizeof(x->text) - x->textlen) {
		x->toolong = 1;
		return;
	}
	memcpy(x->text + x->textlen, s, (size_t)len);
	x->textlen += (size_t)len;
}

/*
 * The end of an element inside a ListMultipartUploads <Upload>: keeps
 * the upload if it has a key, an id and a readable Initiated date (one
 * without is never aborted: its age is unknown).
 */
static void
upload_end(struct s3_xml *x, const XML_Char *el)
{
	if (strcmp(el, "Key") == 0) {
		free(x->cur_key);
		x->cur_key = xml_dup(x);
	} else if (strcmp(el, "UploadId") == 0) {
		free(x->cur_vid);
		x->cur_vid = xml_dup(x);
	} else if (strcmp(el, "Initiated") == 0) {
		x->cur_time = x->toolong ? -1 : parse_iso8601(x->text);
	} else if (strcmp(el, "Upload") == 0) {
		x->in_upload = 0;
		if (x->cur_key == NULL || x->cur_vid == NULL ||
		    x->cur_time < 0)
			return;
		ent_push(x, &x->ents, &x->nents, &x->capents, x->cur_key, 0,
		    x->cur_vid, 0, x->cur_time);
		x->cur_key = NULL;
		x->cur_vid = NULL;
	}
}

static void XMLCALL
xml_end(void *arg, const XML_Char *el)
{
	struct s3_xml *x = arg;
	char *end;

	x->text[x->textlen] = '\0';
	if (x->in_upload) {
		upload_end(x, el);
		return;
	}
	if (x->in_error && strcmp(el, "Key") == 0) {
		free(x->cur_key);
		x->cur_key = x->toolong ? NULL : strdup(x->text);
	} else if (x->in_error && strcmp(el, "Code") == 0) {
		if (x->textlen < sizeof(x->cur_code))
			memcpy(x->cur_code, x->text, x->textlen + 1);
	} else if ((x->in_error || x->in_version) &&
	    strcmp(el, "VersionId") == 0) {
		free(x->cur_vid);
		x->cur_vid = xml_dup(x);
	} else if (x->in_error && strcmp(el, "Error") == 0) {
		x->in_error = 0;
		if (x->cur_key == NULL)
			return;		/* not one of our keys */
		ent_push(x, &x->errs, &x->nerrs, &x->caperrs, x->cur_key,
		    strcmp(x->cur_code, "AccessDenied") == 0, x->cur_vid, 0,
		    -1);
		x->cur_key = NULL;
		x->cur_vid = NULL;
	} else if (strcmp(el, "Status") == 0) {
		if (x->textlen < sizeof(x->status))
			memcpy(x->status, x->text, x->textlen + 1);
	} else if (x->in_contents && strcmp(el, "Key") == 0) {
		free(x->cur_key);
		x->cur_key = x->toolong ? NULL : strdup(x->text);
		if (x->cur_key == NULL && !x->toolong)
			x->bad = -ENOMEM;
	} else if (x->in_contents && strcmp(el, "Size") == 0) {
		errno = 0;
		x->cur_size = strtoull(x->text, &end, 10);
		x->have_size = errno == 0 && end != x->text && *end == '\0';
	} else if (strcmp(el, "Contents") == 0) {
		x->in_contents = 0;
		if (x->cur_key == NULL || !x->have_size)
			return;		/* over-long key: not ours anyway */
		ent_push(x, &x->ents, &x->nents, &x->capents, x->cur_key,
		    x->cur_size, NULL, 0, -1);
		x->cur_key = NULL;
	} else if (x->in_version && (strcmp(el, "Version") == 0 ||
	    strcmp(el, "DeleteMarker") == 0)) {
		/* Every version and marker: deleting a key removes all. */
		x->in_contents = x->in_version = 0;
		if (x->cur_key == NULL || x->cur_vid == NULL)
			return;		/* over-long: not ours anyway */
		ent_push(x, &x->ents, &x->nents, &x->capents, x->cur_key,
		    x->have_size ? x->cur_size : 0, x->cur_vid,
		    strcmp(el, "DeleteMarker") == 0, -1);
		x->cur_key = NULL;
		x->cur_vid = NULL;
	} else if (strcmp(el, "NextKeyMarker") == 0) {
		free(x->next_key);
		x->next_key = xml_dup(x);
		if (x->next_key == NULL && x->toolong)
			x->bad = -EPROTO;
	} else if (strcmp(el, "NextVersionIdMarker") == 0 ||
	    strcmp(el, "NextUploadIdMarker") == 0) {
		free(x->next_vid);
		x->next_vid = xml_dup(x);
		if (x->next_vid == NULL && x->toolong)
			x->bad = -EPROTO;
	} else if (strcmp(el, "IsTruncated") == 0) {
		x->truncated = strcmp(x->text, "true") == 0;
	} else if (strcmp(el, "NextContinuationToken") == 0) {
		free(x->next_token);
		x->next_token = x->toolong ? NULL : strdup(x->text);
		if (x->next_token == NULL)
			x->bad = x->toolong ? -EPROTO : -ENOMEM;
	} else if (strcmp(el, "UploadId") == 0) {
		if (x->textlen < sizeof(x->upload_id))
			memcpy(x->upload_id, x->text, x->textlen + 1);
	} else if (strcmp(el, "Code") == 0 && !x->in_contents) {
		/* An error body; its Message may be empty (Ceph RGW). */
		if (x->textlen < sizeof(x->code))
			memcpy(x->code, x->text, x->textlen + 1);
	}
}

static void
xml_free(struct s3_xml *x)
{
	size_t i;

	for (i = 0; i < x->nents; i++) {
		free(x->ents[i].key);
		free(x->ents[i].vid);
	}
	free(x->ents);
	for (i = 0; i < x->nerrs; i++) {
		free(x->errs[i].key);
		free(x->errs[i].vid);
	}
	free(x->errs);
	free(x->cur_key);
	free(x->cur_vid);
	free(x->next_token);
	free(x->next_key);
	free(x->next_vid);
	memset(x, 0, sizeof(*x));
}

/*
 * After a page of a listing with two markers (ListObjectVersions:
 * key and version id; ListMultipartUploads: key and upload id): 1 if it
 * was the last page; 0 with *kmark and *vmark moved to the next page's
 * markers (taken over from x); -EPROTO if a truncated page does not move
 * on, or we would loop forever.
 */
static int
next_page2(struct s3_xml *x, char **kmark, char **vmark)
{
	if (!x->truncated)
		return 1;
	if (x->next_key == NULL || x->next_key[0] == '\0' ||
	    (*kmark != NULL && strcmp(*kmark, x->next_key) == 0 &&
	    (*vmark == NULL || x->next_vid == NULL ||
	    strcmp(*vmark, x->next_vid) == 0)))
		return -EPROTO;
	free(*kmark);
	free(*vmark);
	*kmark = x->next_key;
	*vmark = x->next_vid != NULL && x->next_vid[0] != '\0' ?
	    x->next_vid : NULL;
	if (*vmark == NULL)
		free(x->next_vid);
	x->next_key = x->next_vid = NULL;
	return 0;
}

/* Parses an S3 XML body; -EPROTO if it is not well-formed. */
static int
xml_parse(struct s3_xml *x, const char *buf, size_t len)
{
	XML_Parser p;
	int rc = 0;

	memset(x, 0, sizeof(*x));
	if (len > INT32_MAX)
		return -EPROTO;
	p = XML_ParserCreate("UTF-8");
	if (p == NULL)
		return -ENOMEM;
	XML_SetUserData(p, x);
	XML_SetElementHandler(p, xml_start, xml_end);
	XML_SetCharacterDataHandler(p, xml_text);
	if (XML_Parse(p, buf, (int)len, 1) != XML_STATUS_OK)
		rc = -EPROTO;
	XML_ParserFree(p);
	if (rc == 0 && x->bad != 0)
		rc = x->bad;
	return rc;
}

int
bk_store_s3_xml_probe(const char *buf, size_t len, size_t *nents,
    size_t *nerrs, char code[64], char status[32])
{
	struct s3_xml x;
	size_t i;
	int rc;

	*nents = *nerrs = 0;
	code[0] = status[0] = '\0';
	rc = xml_parse(&x, buf, len);
	if (rc == 0) {
		/* Every entry kept has a key; an error's flag is 0 or 1. */
		for (i = 0; i < x.nents; i++)
			if (x.ents[i].key == NULL || (x.ents[i].marker &&
			    x.ents[i].vid == NULL) || (x.ents[i].time >= 0 &&
			    x.ents[i].vid == NULL) || x.ents[i].time < -1)
				rc = -EFAULT;
		for (i = 0; i < x.nerrs; i++)
			if (x.errs[i].key == NULL || x.errs[i].size > 1)
				rc = -EFAULT;
		*nents = x.nents;
		*nerrs = x.nerrs;
		memcpy(code, x.code, 64);
		memcpy(status, x.status, 32);
	}
	xml_free(&x);
	return rc;
}

/* The S3 error code of an error body ("" if none or not XML). */
static void
err_code(const struct s3_req *r, char *code, size_t cap)
{
	struct s3_xml x;

	code[0] = '\0';
	if (r->errlen == 0)
		return;
	if (xml_parse(&x, r->err, r->errlen) == 0)
		snprintf(code, cap, "%s", x.code);
	xml_free(&x);
}

/* ---- perform with retries ------------------------------------------------ */

static int
retryable_curl(CURLcode cc)
{
	switch (cc) {
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_CONNECT:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
		return 1;
	default:
		return 0;
	}
}

static int
curl_errno(CURLcode cc)
{
	switch (cc) {
	case CURLE_COULDNT_RESOLVE_HOST:
		return -EHOSTUNREACH;
	case CURLE_COULDNT_CONNECT:
		return -ECONNREFUSED;
	case CURLE_OPERATION_TIMEDOUT:
		return -ETIMEDOUT;
	case CURLE_OUT_OF_MEMORY:
		return -ENOMEM;
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CONNECT_ERROR:
		/* The server's certificate or TLS version is refused. */
		return -EPERM;
	default:
		return -EIO;
	}
}

/* 1 if r's body hashes to r->body_hex, else 0. */
static int
body_has_hash(const struct s3_req *r)
{
	unsigned char sha[32];
	char hex[65];

	cf_bk_sha256(r->body, r->bodylen, sha);
	sodium_bin2hex(hex, sizeof(hex), sha, sizeof(sha));
	return strcmp(hex, r->body_hex) == 0;
}

/*
 * Whether the server's Date differs from this machine's clock by more
 * than SigV4 allows (15 minutes): a 403 to a HEAD has no body to say
 * RequestTimeTooSkewed.
 */
static int
clock_skewed(const struct s3_req *r)
{
	time_t theirs = r->date[0] != '\0' ? curl_getdate(r->date, NULL) : -1;
	double d;

	if (theirs == -1)
		return 0;
	d = difftime(time(NULL), theirs);
	return d > 900 || d < -900;
}

/*
 * Classifies a finished attempt: returns 0 or -errno, and sets *retry
 * when another attempt may succeed.
 */
static int
classify(struct s3_req *r, CURLcode cc, int *retry)
{
	char code[64];

	*retry = 0;
	if (cc == CURLE_WRITE_ERROR && r->extra && r->status == 200)
		return 0;	/* had what we wanted of a whole object */
	if (cc == CURLE_WRITE_ERROR && r->overflow)
		return -EFBIG;
	if (cc == CURLE_WRITE_ERROR && r->extra)
		return -EPROTO;	/* a 206 longer than the range */
	if (cc != CURLE_OK) {
		*retry = retryable_curl(cc);
		return curl_errno(cc);
	}
	if (r->status >= 200 && r->status < 300)
		return 0;
	switch (r->status) {
	case 403:
		/* A full quota or a wrong clock is no credential problem. */
		err_code(r, code, sizeof(code));
		if (strcmp(code, "QuotaExceeded") == 0)
			return -EDQUOT;
		if (strcmp(code, "RequestTimeTooSkewed") == 0 ||
		    clock_skewed(r))
			return -ETIME;	/* this machine's clock is off */
		return -EACCES;	/* AccessDenied, SignatureDoesNotMatch, ... */
	case 404:
		return -ENOENT;
	case 409:
		return -EBUSY;
	case 412:
		return -EEXIST;	/* If-None-Match: * and the key exists */
	case 416:
		return -EPROTO;	/* the range is past the end */
	case 501:
		return -EOPNOTSUPP;	/* NotImplemented: s3rver, some gateways */
	case 429:
	case 500:
	case 502:
	case 503:
	case 504:
		*retry = 1;	/* SlowDown, InternalError, ... */
		return -EIO;
	case 400:
		err_code(r, code, sizeof(code));
		/*
		 * The hash sent was the object's name ([BK-LAY-3]): if the
		 * body's own hash is another, no retry can help.
		 */
		if ((strcmp(code, "BadDigest") == 0 ||
		    strcmp(code, "XAmzContentSHA256Mismatch") == 0) &&
		    r->body_hex[0] != '\0' && !body_has_hash(r))
			return -EINVAL;
		if (strcmp(code, "BadDigest") == 0 ||
		    strcmp(code, "XAmzContentSHA256Mismatch") == 0 ||
		    strcmp(code, "RequestTimeout") == 0 ||
		    strcmp(code, "IncompleteBody") == 0)
			*retry = 1;	/* damaged or slow in transit */
		return -EIO;
	default:
		return -EIO;
	}
}

static void
req_reset(struct s3_req *r)
{
	r->outlen = 0;
	r->got = 0;
	r->skip = 0;
	r->started = r->overflow = r->extra = 0;
	r->errlen = 0;
	r->err[0] = '\0';
	r->status = 0;
	r->clen = -1;
	r->etag[0] = '\0';
	r->version_id[0] = '\0';
	r->retain_until[0] = '\0';
	r->legal_hold = 0;
	r->date[0] = '\0';
}

static int
s3_perform(struct s3 *s, struct s3_req *r)
{
	struct curl_slist *hdrs = NULL;
	long start = now_ms(), delay, cap;
	CURLcode cc;
	int rc = -EIO, retry;

	for (r->attempts = 0;;) {
		req_reset(r);
		r->h = pool_get(s, &r->fd);
		if (r->h == NULL)
			return -ENOMEM;
		rc = s3_setup(s, r, &hdrs);
		if (rc == 0) {
			cc = curl_easy_perform(r->h);
			if (curl_easy_getinfo(r->h, CURLINFO_ACTIVESOCKET,
			    &r->fd) != CURLE_OK)
				r->fd = CURL_SOCKET_BAD;
			curl_easy_getinfo(r->h, CURLINFO_RESPONSE_CODE,
			    &r->status);
			curl_easy_getinfo(r->h,
			    CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &r->clen);
			rc = classify(r, cc, &retry);
		} else {
			retry = 0;
		}
		/* The handle must not point at freed headers or at r. */
		curl_easy_reset(r->h);
		curl_slist_free_all(hdrs);
		hdrs = NULL;
		pool_put(s, r->h, r->fd);
		r->h = NULL;
		r->attempts++;
		if (!retry || r->attempts >= s->max_attempts)
			break;
		/* Full jitter: uniform in [0, min(cap, base * 2^n)). */
		cap = S3_BACKOFF_BASE_MS << (r->attempts < 10 ? r->attempts : 10);
		if (cap > S3_BACKOFF_CAP_MS)
			cap = S3_BACKOFF_CAP_MS;
		delay = (long)randombytes_uniform((uint32_t)cap) + 1;
		if (now_ms() - start + delay > s->retry_ms)
			break;
		sleep_ms(delay);
	}
	return rc;
}

/* A GET of a listing (list body limit), its XML body parsed into x. */
static int
list_get(struct s3 *s, struct s3_req *r, struct s3_xml *x)
{
	int rc;

	r->method = "GET";
	r->outmax = S3_LIST_BODY_MAX;
	rc = s3_perform(s, r);
	if (rc == 0)
		rc = xml_parse(x, r->out != NULL ? (const char *)r->out : "",
		    r->outlen);
	return rc;
}

/* ---- one op's requests in parallel --------------------------------------- */

struct s3_par {
	pthread_mutex_t m;	/* protects next and rc */
	size_t next, n;
	int rc;			/* the first failure */
	int (*fn)(void *arg, size_t i);
	void *arg;
};

static void *
par_main(void *a)
{
	struct s3_par *p = a;
	size_t i;
	int rc;

	for (;;) {
		pthread_mutex_lock(&p->m);
		if (p->rc < 0 || p->next >= p->n) {
			pthread_mutex_unlock(&p->m);
			return NULL;
		}
		i = p->next++;
		pthread_mutex_unlock(&p->m);
		rc = p->fn(p->arg, i);
		if (rc < 0) {
			pthread_mutex_lock(&p->m);
			if (p->rc == 0)
				p->rc = rc;
			pthread_mutex_unlock(&p->m);
		}
	}
}

/*
 * Calls fn(arg, i) for every i in [0, n) on up to k threads, the
 * caller's included; after the first failure no new item starts, and
 * that failure is returned.  A thread that cannot be created leaves its
 * share to the others.
 */
static int
par_run(unsigned k, size_t n, int (*fn)(void *, size_t), void *arg)
{
	pthread_t t[S3_POOL_MAX];
	struct s3_par p;
	unsigned i, nt = 0;

	memset(&p, 0, sizeof(p));
	if (pthread_mutex_init(&p.m, NULL) != 0)
		return -ENOMEM;
	p.n = n;
	p.fn = fn;
	p.arg = arg;
	if (k > S3_POOL_MAX)
		k = S3_POOL_MAX;
	if (k > n)
		k = (unsigned)n;
	for (i = 1; i < k; i++)
		if (pthread_create(&t[nt], NULL, par_main, &p) == 0)
			nt++;
	par_main(&p);
	for (i = 0; i < nt; i++)
		pthread_join(t[i], NULL);
	pthread_mutex_destroy(&p.m);
	return p.rc;
}

/* ---- the ops ------------------------------------------------------------- */

/* HEADs an object; *out (the caller frees it) holds the answer. */
static int
head_req(struct s3 *s, enum cf_bk_kind kind, const char *name,
    struct s3_req **out)
{
	struct s3_req *r;
	int rc;

	*out = r = calloc(1, sizeof(*r));
	if (r == NULL)
		return -ENOMEM;
	r->method = "HEAD";
	rc = obj_url(s, kind, name, r);
	if (rc == 0)
		rc = s3_perform(s, r);
	return rc;
}

static int
s3_head(struct s3 *s, enum cf_bk_kind kind, const char *name, uint64_t *size)
{
	struct s3_req *r;
	int rc;

	*size = 0;
	rc = head_req(s, kind, name, &r);
	if (rc == 0 && r->clen < 0)
		rc = -EPROTO;
	if (rc == 0)
		*size = (uint64_t)r->clen;
	free(r);
	return rc;
}

static int
s3_stat(void *ctx, enum cf_bk_kind kind, const char *name, uint64_t *size)
{
	return s3_head(ctx, kind, name, size);
}

static int
s3_get(void *ctx, enum cf_bk_kind kind, const char *name, size_t max,
    unsigned char **buf, size_t *len)
{
	struct s3_req *r;
	int rc;

	*buf = NULL;
	*len = 0;
	r = calloc(1, sizeof(*r));
	if (r == NULL)
		return -ENOMEM;
	r->method = "GET";
	r->outmax = max;
	rc = obj_url(ctx, kind, name, r);
	if (rc == 0)
		rc = s3_perform(ctx, r);
	if (rc < 0)
		goto out;
	if (r->out == NULL) {
		r->out = malloc(1);	/* an empty object */
		if (r->out == NULL) {
			rc = -ENOMEM;
			goto out;
		}
	}
	*buf = r->out;
	*len = r->outlen;
	r->out = NULL;
out:
	free(r->out);
	free(r);
	return rc;
}

static int
s3_get_range(void *ctx, enum cf_bk_kind kind, const char *name, uint64_t off,
    size_t len, unsigned char *buf)
{
	struct s3_req *r;
	uint64_t size;
	int rc;

	if (len == 0) {
		/* No empty Range exists in HTTP: check existence and size. */
		rc = s3_head(ctx, kind, name, &size);
		if (rc == 0 && off > size)
			rc = -EPROTO;
		return rc;
	}
	if (off > UINT64_MAX - len)
		return -EINVAL;
	r = calloc(1, sizeof(*r));
	if (r == NULL)
		return -ENOMEM;
	r->method = "GET";
	r->ranged = 1;
	r->range_off = off;
	r->fixed = buf;
	r->fixedlen = len;
	rc = obj_url(ctx, kind, name, r);
	if (rc == 0)
		rc = s3_perform(ctx, r);
	if (rc == 0 && r->got != len)
		rc = -EPROTO;	/* shorter than the index says */
	free(r);
	return rc;
}

/* r->url = object URL + "?" + query (query already canonical). */
static int
mp_url(struct s3 *s, enum cf_bk_kind kind, const char *name,
    struct s3_req *r, const char *q1, const char *q2, const char *enc)
{
	size_t pos;
	int rc;

	rc = obj_url(s, kind, name, r);
	if (rc < 0)
		return rc;
	pos = strlen(r->url);
	rc = cat(r->url, sizeof(r->url), &pos, q1);
	if (rc == 0 && q2 != NULL)
		rc = cat(r->url, sizeof(r->url), &pos, q2);
	if (rc == 0 && enc != NULL)
		rc = cat_enc(r->url, sizeof(r->url), &pos, enc, 0);
	return rc;
}

/* One multipart upload's parts, uploaded by par_run's threads. */
struct mp {
	struct s3 *s;
	enum cf_bk_kind kind;
	const char *name;
	const char *id;			/* the upload id */
	const unsigned char *buf;
	size_t len, nparts;
	char (*etags)[128];		/* etags[i]: written by one thread */
};

/* PUTs part i + 1 (retried on its own by s3_perform). */
static int
mp_part(void *arg, size_t i)
{
	struct mp *m = arg;
	struct s3 *s = m->s;
	struct s3_req *r;
	char num[32];
	int rc;

	r = calloc(1, sizeof(*r));
	if (r == NULL)
		return -ENOMEM;
	r->method = "PUT";
	r->body = m->buf + i * s->part_size;
	r->bodylen = i + 1 < m->nparts ? s->part_size :
	    m->len - i * s->part_size;
	r->outmax = S3_ERRBODY_MAX;
	snprintf(num, sizeof(num), "?partNumber=%zu", i + 1);
	rc = mp_url(s, m->kind, m->name, r, num, "&uploadId=", m->id);
	if (rc == 0)
		rc = s3_perform(s, r);
	if (rc == 0 && r->etag[0] == '\0')
		rc = -EPROTO;
	if (rc == 0)
		memcpy(m->etags[i], r->etag, sizeof(m->etags[i]));
	free(r->out);
	free(r);
	return rc;
}

/*
 * Multipart upload of an object larger than the part size: create,
 * upload the parts, up to conns at once (each retried on its own; the
 * parts are slices of the caller's buffer, so no copies), complete.
 * On failure the upload is aborted (best effort; one left by a killed
 * process is aborted by a later prune, s3_cleanup).  A retried
 * upload of the same object does not resume one left by an earlier
 * attempt: the callers never put the same object twice (pack names are
 * hashes of bytes sealed under random keys; docs/s3.md).
 */
static int
s3_put_multipart(struct s3 *s, enum cf_bk_kind kind, const char *name,
    const unsigned char *buf, size_t len)
{
	struct s3_req *r;
	struct s3_xml x;
	struct mp m;
	char *id = NULL, *body = NULL, (*etags)[128] = NULL, num[32];
	size_t nparts = (len + s->part_size - 1) / s->part_size, i, pos, cap;
	int rc;

	memset(&x, 0, sizeof(x));
	if (nparts > 10000)
		return -EFBIG;	/* S3's limit on parts */
	r = calloc(1, sizeof(*r));
	etags = calloc(nparts, sizeof(*etags));
	cap = 256 + nparts * 256;
	body = malloc(cap);
	rc = -ENOMEM;
	if (r == NULL || etags == NULL || body == NULL)
		goto out;
	r->method = "POST";
	r->outmax = 65536;
	r->lock = kind != CF_BK_KIND_LOCK;	/* given at creation */
	rc = mp_url(s, kind, name, r, "?uploads=", NULL, NULL);
	if (rc == 0)
		rc = s3_perform(s, r);
	if (rc == 0)
		rc = xml_parse(&x, (const char *)r->out, r->outlen);
	if (rc == 0 && x.upload_id[0] == '\0')
		rc = -EPROTO;
	if (rc < 0)
		goto out;
	id = strdup(x.upload_id);
	xml_free(&x);
	free(r->out);
	r->out = NULL;
	if (id == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	m.s = s;
	m.kind = kind;
	m.name = name;
	m.id = id;
	m.buf = buf;
	m.len = len;
	m.nparts = nparts;
	m.etags = etags;
	rc = par_run(s->conns, nparts, mp_part, &m);
	if (rc < 0)
		goto abort;
	pos = 0;
	rc = cat(body, cap, &pos, "<CompleteMultipartUpload>");
	for (i = 0; rc == 0 && i < nparts; i++) {
		snprintf(num, sizeof(num), "%zu", i + 1);
		rc = cat(body, cap, &pos, "<Part><PartNumber>");
		if (rc == 0)
			rc = cat(body, cap, &pos, num);
		if (rc == 0)
			rc = cat(body, cap, &pos, "</PartNumber><ETag>");
		if (rc == 0)
			rc = cat(body, cap, &pos, etags[i]);
		if (rc == 0)
			rc = cat(body, cap, &pos, "</ETag></Part>");
	}
	if (rc == 0)
		rc = cat(body, cap, &pos, "</CompleteMultipartUpload>");
	if (rc < 0)
		goto abort;
	memset(r, 0, sizeof(*r));
	r->method = "POST";
	r->body = (const unsigned char *)body;
	r->bodylen = pos;
	r->outmax = 65536;
	rc = mp_url(s, kind, name, r, "?uploadId=", NULL, id);
	if (rc == 0)
		rc = s3_perform(s, r);
	/* Complete may answer 200 with an error inside. */
	if (rc == 0)
		rc = xml_parse(&x, (const char *)r->out, r->outlen);
	if (rc == 0 && x.code[0] != '\0')
		rc = -EIO;
	xml_free(&x);
	free(r->out);
	r->out = NULL;
	if (rc == 0)
		goto out;
abort:
	memset(r, 0, sizeof(*r));
	r->method = "DELETE";
	r->outmax = S3_ERRBODY_MAX;
	if (mp_url(s, kind, name, r, "?uploadId=", NULL, id) == 0)
		(void)s3_perform(s, r);	/* best effort */
out:
	xml_free(&x);
	if (r != NULL)
		free(r->out);
	free(r);
	free(id);
	free(etags);
	free(body);
	return rc;
}

static int
s3_put(void *ctx, enum cf_bk_kind kind, const char *name,
    const unsigned char *buf, size_t len, int excl)
{
	struct s3 *s = ctx;
	struct s3_req *r = NULL;
	unsigned char *old = NULL;
	size_t oldlen = 0;
	uint64_t size;
	int rc;

	if (excl) {
		/*
		 * HEAD first for servers that ignore If-None-Match on PUT;
		 * the conditional PUT below closes the race where the
		 * server supports it (AWS since 2024, Ceph RGW, MinIO).
		 */
		rc = s3_head(s, kind, name, &size);
		if (rc == 0)
			return -EEXIST;
		if (rc != -ENOENT)
			return rc;
	}
	/* The config (excl) is small: never multipart. */
	if (!excl && len > s->part_size)
		return s3_put_multipart(s, kind, name, buf, len);
	r = calloc(1, sizeof(*r));
	if (r == NULL)
		return -ENOMEM;
	r->method = "PUT";
	r->body = buf;
	r->bodylen = len;
	r->if_none_match = excl;
	/*
	 * An object named by SHA-256 ([BK-LAY-3]) carries its body's hash
	 * in its name: no second pass over it.  The server checks the
	 * header against the body it receives, so a wrong name is refused
	 * (XAmzContentSHA256Mismatch), never stored: -EINVAL, not retried
	 * (classify).
	 */
	if (kind != CF_BK_KIND_CONFIG && bk_name_valid(name) &&
	    cf_bk_named_sha256(buf, len))
		memcpy(r->body_hex, name, sizeof(r->body_hex));
	/* Repository locks come and go: never retained. */
	r->lock = kind != CF_BK_KIND_LOCK;
	r->outmax = S3_ERRBODY_MAX;
	rc = obj_url(s, kind, name, r);
	if (rc == 0)
		rc = s3_perform(s, r);
	if (rc == -EEXIST && r->attempts > 1) {
		/*
		 * An earlier attempt may have stored it and lost the
		 * answer: the object is ours if it holds our bytes.
		 */
		rc = s3_get(s, kind, name, len, &old, &oldlen);
		if (rc == 0)
			rc = oldlen == len && (len == 0 ||
			    memcmp(old, buf, len) == 0) ? 0 : -EEXIST;
		else if (rc == -EFBIG)
			rc = -EEXIST;
		free(old);
	}
	free(r->out);
	free(r);
	return rc;
}

static int s3_versioned(struct s3 *s);
static int s3_del_versions(struct s3 *s, enum cf_bk_kind kind,
    const char *const *names, size_t n, int *rcs);

/*
 * Deletes an object.  In a versioned bucket (Object Lock turns
 * versioning on) every version and delete marker of the key is deleted
 * by its version id (s3_del_versions), so the space is freed instead of
 * a delete marker hiding a kept version; a version under retention or
 * a legal hold is not even tried: -EROFS (and an AccessDenied answer to
 * a versioned delete is -EROFS too: the server's lock).
 */
static int
s3_del(void *ctx, enum cf_bk_kind kind, const char *name)
{
	struct s3 *s = ctx;
	struct s3_req *r;
	char code[64], vid[128];
	size_t pos;
	int rc, round, versioned, v, one;
	int64_t until;

	/*
	 * Versioning unknown (GetBucketVersioning refused): the loop below
	 * still deletes version by version, using HEAD's version id.
	 */
	v = s->lock_mode[0] != '\0' ? 1 : s3_versioned(s);
	if (v > 0) {
		rc = s3_del_versions(s, kind, &name, 1, &one);
		return rc < 0 ? rc : one;
	}
	r = calloc(1, sizeof(*r));
	if (r == NULL)
		return -ENOMEM;
	/* S3 answers 204 for a missing key too; the contract wants ENOENT. */
	for (round = 0; round < 64; round++) {
		memset(r, 0, sizeof(*r));
		r->method = "HEAD";
		rc = obj_url(s, kind, name, r);
		if (rc == 0)
			rc = s3_perform(s, r);
		if (rc == -ENOENT && round > 0) {
			rc = 0;		/* every version is gone */
			break;
		}
		if (rc < 0)
			break;
		until = r->retain_until[0] != '\0' ?
		    parse_iso8601(r->retain_until) : 0;
		if (until > (int64_t)time(NULL)) {
			rc = -EROFS;
			break;
		}
		versioned = r->version_id[0] != '\0' &&
		    strcmp(r->version_id, "null") != 0;
		/* (Copied before the reset: an empty versionId= deletes
		 * nothing, it adds a delete marker.) */
		memcpy(vid, r->version_id, sizeof(vid));
		memset(r, 0, sizeof(*r));
		r->method = "DELETE";
		r->outmax = S3_ERRBODY_MAX;
		rc = obj_url(s, kind, name, r);
		if (rc == 0 && versioned) {
			pos = strlen(r->url);
			rc = cat(r->url, sizeof(r->url), &pos, "?versionId=");
			if (rc == 0)
				rc = cat_enc(r->url, sizeof(r->url), &pos, vid,
				    0);
		}
		if (rc == 0)
			rc = s3_perform(s, r);
		if (rc == -EACCES && (versioned || s->lock_mode[0] != '\0')) {
			err_code(r, code, sizeof(code));
			if (strcmp(code, "AccessDenied") == 0)
				rc = -EROFS;	/* locked version */
		}
		free(r->out);
		r->out = NULL;
		if (rc < 0 || !versioned)
			break;
		/* An older version may now be the current one: again. */
	}
	free(r->out);
	free(r);
	return rc;
}

int
bk_store_s3_lock_until(void *ctx, enum cf_bk_kind kind, const char *name,
    int64_t *until)
{
	struct s3_req *r;
	int rc;

	*until = 0;
	rc = head_req(ctx, kind, name, &r);
	if (rc == 0 && r->retain_until[0] != '\0') {
		*until = parse_iso8601(r->retain_until);
		if (*until < 0) {
			*until = 0;
			rc = -EPROTO;
		}
	}
	free(r);
	return rc;
}

/*
 * The name of a listed key under dir ("prefix/data/"), or NULL if the key
 * is not a valid object of that kind (strays, temporaries, nested keys).
 */
static const char *
list_name(enum cf_bk_kind kind, const char *key, size_t dirlen)
{
	const char *rest = key + dirlen;

	if (kind == CF_BK_KIND_PACK) {
		if (strlen(rest) != 3 + 64 || rest[2] != '/' ||
		    strncmp(rest, rest + 3, 2) != 0)
			return NULL;
		rest += 3;
	}
	return bk_name_valid(rest) ? rest : NULL;
}

static int
s3_list(void *ctx, enum cf_bk_kind kind,
    int (*fn)(void *arg, const char *name, uint64_t size), void *arg)
{
	static const char *const dirs[] = { NULL, "data/", "index/",
	    "snapshots/", "locks/" };
	struct s3 *s = ctx;
	struct s3_req *r;
	struct s3_xml x;
	char dir[1024], *token = NULL;
	const char *name;
	size_t i, pos, dirlen;
	int rc, n;

	memset(&x, 0, sizeof(x));
	if (kind < CF_BK_KIND_PACK || kind > CF_BK_KIND_LOCK)
		return -EINVAL;
	n = snprintf(dir, sizeof(dir), "%s%s", s->prefix, dirs[kind]);
	if (n < 0 || (size_t)n >= sizeof(dir))
		return -ENAMETOOLONG;
	dirlen = (size_t)n;
	r = calloc(1, sizeof(*r));
	if (r == NULL)
		return -ENOMEM;
	for (;;) {
		/* Query parameters in SigV4's canonical (sorted) order. */
		pos = 0;
		rc = cat(r->url, sizeof(r->url), &pos, s->bucket_url);
		if (rc == 0)
			rc = cat(r->url, sizeof(r->url), &pos, "/?");
		if (rc == 0 && token != NULL) {
			rc = cat(r->url, sizeof(r->url), &pos,
			    "continuation-token=");
			if (rc == 0)
				rc = cat_enc(r->url, sizeof(r->url), &pos,
				    token, 0);
			if (rc == 0)
				rc = cat(r->url, sizeof(r->url), &pos, "&");
		}
		if (rc == 0)
			rc = cat(r->url, sizeof(r->url), &pos,
			    "list-type=2&max-keys=1000&prefix=");
		if (rc == 0)
			rc = cat_enc(r->url, sizeof(r->url), &pos, dir, 0);
		if (rc < 0)
			goto out;
		rc = list_get(s, r, &x);
		if (rc < 0)
			goto out;
		for (i = 0; i < x.nents; i++) {
			if (strncmp(x.ents[i].key, dir, dirlen) != 0)
				continue;
			name = list_name(kind, x.ents[i].key, dirlen);
			if (name == NULL)
				continue;
			rc = fn(arg, name, x.ents[i].size);
			if (rc != 0)
				goto out;
		}
		if (!x.truncated)
			break;
		/* A truncated page must move on, or we would loop forever. */
		rc = -EPROTO;
		if (x.next_token == NULL || x.next_token[0] == '\0' ||
		    (token != NULL && strcmp(token, x.next_token) == 0))
			goto out;
		free(token);
		token = x.next_token;
		x.next_token = NULL;
		xml_free(&x);
	}
	rc = 0;
out:
	xml_free(&x);
	free(token);
	free(r->out);
	free(r);
	return rc;
}

/* ---- interrupted multipart uploads --------------------------------------- */

/*
 * 1 if key is one of this repository's object keys (prefix + config,
 * data/XX/<id>, index/<id>, snapshots/<id> or locks/<id>): not another
 * repository's under a longer prefix, not a stray of another program.
 */
static int
repo_key(const struct s3 *s, const char *key)
{
	static const struct {
		const char *dir;
		enum cf_bk_kind kind;
	} dirs[] = {
		{ "data/", CF_BK_KIND_PACK },
		{ "index/", CF_BK_KIND_INDEX },
		{ "snapshots/", CF_BK_KIND_SNAPSHOT },
		{ "locks/", CF_BK_KIND_LOCK },
	};
	size_t plen = strlen(s->prefix), i, dl;
	const char *rest;

	if (strncmp(key, s->prefix, plen) != 0)
		return 0;
	rest = key + plen;
	if (strcmp(rest, "config") == 0)
		return 1;
	for (i = 0; i < sizeof(dirs) / sizeof(*dirs); i++) {
		dl = strlen(dirs[i].dir);
		if (strncmp(rest, dirs[i].dir, dl) == 0)
			return list_name(dirs[i].kind, rest, dl) != NULL;
	}
	return 0;
}

/* The stale uploads found, aborted by par_run's threads. */
struct stale {
	struct s3 *s;
	struct s3_ent *v;	/* key and vid (the upload id) */
	size_t n, cap;
	unsigned char *done;	/* done[i]: aborted; written by one thread */
};

/* AbortMultipartUpload: DELETE key?uploadId=ID. */
static int
stale_abort(void *arg, size_t i)
{
	struct stale *st = arg;
	struct s3_req *r;
	size_t pos = 0;
	int rc;

	r = calloc(1, sizeof(*r));
	if (r == NULL)
		return -ENOMEM;
	r->method = "DELETE";
	r->outmax = S3_ERRBODY_MAX;
	rc = cat(r->url, sizeof(r->url), &pos, st->s->bucket_url);
	if (rc == 0)
		rc = cat(r->url, sizeof(r->url), &pos, "/");
	if (rc == 0)
		rc = cat_enc(r->url, sizeof(r->url), &pos, st->v[i].key, 1);
	if (rc == 0)
		rc = cat(r->url, sizeof(r->url), &pos, "?uploadId=");
	if (rc == 0)
		rc = cat_enc(r->url, sizeof(r->url), &pos, st->v[i].vid, 0);
	if (rc == 0)
		rc = s3_perform(st->s, r);
	if (rc == 0)
		st->done[i] = 1;
	else if (rc == -ENOENT)
		rc = 0;		/* NoSuchUpload: completed or aborted meanwhile */
	free(r->out);
	free(r);
	return rc;
}

/*
 * Lists the multipart uploads under the prefix (ListMultipartUploads,
 * pages followed by key-marker / upload-id-marker) and keeps those of
 * repository keys initiated before `before`.
 */
static int
stale_list(struct stale *st, int64_t before)
{
	struct s3 *s = st->s;
	struct s3_req *r;
	struct s3_xml x;
	char *kmark = NULL, *umark = NULL, num[32];
	size_t i, pos;
	int rc;

	memset(&x, 0, sizeof(x));
	r = calloc(1, sizeof(*r));
	if (r == NULL)
		return -ENOMEM;
	snprintf(num, sizeof(num), "%u", s->uploads_page);
	for (;;) {
		/* Query parameters in SigV4's canonical (sorted) order. */
		memset(r, 0, sizeof(*r));
		pos = 0;
		rc = cat(r->url, sizeof(r->url), &pos, s->bucket_url);
		if (rc == 0)
			rc = cat(r->url, sizeof(r->url), &pos, "/?");
		if (rc == 0 && kmark != NULL) {
			rc = cat(r->url, sizeof(r->url), &pos, "key-marker=");
			if (rc == 0)
				rc = cat_enc(r->url, sizeof(r->url), &pos,
				    kmark, 0);
			if (rc == 0)
				rc = cat(r->url, sizeof(r->url), &pos, "&");
		}
		if (rc == 0)
			rc = cat(r->url, sizeof(r->url), &pos, "max-uploads=");
		if (rc == 0)
			rc = cat(r->url, sizeof(r->url), &pos, num);
		if (rc == 0)
			rc = cat(r->url, sizeof(r->url), &pos, "&prefix=");
		if (rc == 0)
			rc = cat_enc(r->url, sizeof(r->url), &pos, s->prefix,
			    0);
		if (rc == 0 && umark != NULL) {
			rc = cat(r->url, sizeof(r->url), &pos,
			    "&upload-id-marker=");
			if (rc == 0)
				rc = cat_enc(r->url, sizeof(r->url), &pos,
				    umark, 0);
		}
		if (rc == 0)
			rc = cat(r->url, sizeof(r->url), &pos, "&uploads=");
		if (rc < 0)
			goto out;
		rc = list_get(s, r, &x);
		free(r->out);
		r->out = NULL;
		if (rc < 0)
			goto out;
		for (i = 0; i < x.nents; i++) {
			if (x.ents[i].time < 0 || x.ents[i].time >= before ||
			    !repo_key(s, x.ents[i].key))
				continue;
			if (st->n == st->cap) {
				size_t c = st->cap ? st->cap * 2 : 16;
				struct s3_ent *v = realloc(st->v,
				    c * sizeof(*v));

				if (v == NULL) {
					rc = -ENOMEM;
					goto out;
				}
				st->v = v;
				st->cap = c;
			}
			st->v[st->n++] = x.ents[i];
			x.ents[i].key = x.ents[i].vid = NULL;
		}
		rc = next_page2(&x, &kmark, &umark);
		if (rc > 0)
			break;
		if (rc < 0)
			goto out;
		xml_free(&x);
	}
	rc = 0;
out:
	xml_free(&x);
	free(kmark);
	free(umark);
	free(r->out);
	free(r);
	return rc;
}

/*
 * Aborts the multipart uploads of this repository's keys initiated
 * before `before` (by the server's clock, as listed): a writer killed
 * in the middle of a large put leaves its upload, invisible to list
 * and billed, until someone aborts it.  Younger ones may be a running
 * writer's and are left alone, and so is every key outside the
 * repository's layout under the prefix (another program's, or another
 * repository's under a longer prefix).
 */
static int
s3_cleanup(void *ctx, int64_t before, uint64_t *n)
{
	struct stale st;
	size_t i;
	int rc;

	*n = 0;
	memset(&st, 0, sizeof(st));
	st.s = ctx;
	rc = stale_list(&st, before);
	if (rc < 0 || st.n == 0)
		goto out;
	st.done = calloc(st.n, 1);
	if (st.done == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	rc = par_run(st.s->conns, st.n, stale_abort, &st);
	for (i = 0; i < st.n; i++)
		*n += st.done[i];
out:
	for (i = 0; i < st.n; i++) {
		free(st.v[i].key);
		free(st.v[i].vid);
	}
	free(st.v);
	free(st.done);
	return rc;
}

void
bk_store_s3_set_uploads_page(void *ctx, unsigned n)
{
	struct s3 *s = ctx;

	if (n < 1 || n > S3_LIST_PAGE)
		cf_misuse("bk_store_s3_set_uploads_page: page out of range");
	s->uploads_page = n;
}

static void
s3_close(void *ctx)
{
	struct s3 *s = ctx;
	unsigned i;

	if (s == NULL)
		return;
	for (i = 0; i < s->npool; i++)
		curl_easy_cleanup(s->pool[i]);
	pthread_mutex_destroy(&s->lock);
	pthread_mutex_destroy(&s->up.m);
	pthread_mutex_destroy(&s->down.m);
	free(s->bucket_url);
	free(s->prefix);
	free(s->sigv4);
	free(s->access_key);
	free_secret(s->secret);
	free_secret(s->token_hdr);
	free(s->ca_file);
	curl_slist_free_all(s->resolve);
	free(s);
}

/*
 * GET bucket/?query (a bucket sub-resource such as "versioning=");
 * *out (free its out, then it) holds the answer, also on failure.
 */
static int
bucket_get(struct s3 *s, const char *query, struct s3_req **out)
{
	struct s3_req *r;
	size_t pos = 0;
	int rc;

	*out = r = calloc(1, sizeof(*r));
	if (r == NULL)
		return -ENOMEM;
	r->method = "GET";
	r->outmax = 65536;
	rc = cat(r->url, sizeof(r->url), &pos, s->bucket_url);
	if (rc == 0)
		rc = cat(r->url, sizeof(r->url), &pos, "/?");
	if (rc == 0)
		rc = cat(r->url, sizeof(r->url), &pos, query);
	if (rc == 0)
		rc = s3_perform(s, r);
	return rc;
}

/* 1 if the bucket keeps versions (asked once: GET ?versioning). */
static int
s3_versioned(struct s3 *s)
{
	struct s3_req *r;
	struct s3_xml x;
	int rc, v;

	pthread_mutex_lock(&s->lock);
	v = s->versioning;
	pthread_mutex_unlock(&s->lock);
	if (v >= 0)
		return v;
	rc = bucket_get(s, "versioning=", &r);
	if (r == NULL)
		return rc;
	/*
	 * A server that does not know the sub-resource may answer with
	 * something else: s3rver sends the bucket's listing, often more
	 * than the 64 KiB a versioning answer never needs.  Such a server
	 * keeps no versions; and were it wrong, a delete without a version
	 * id only leaves a delete marker, it loses nothing.
	 */
	if (rc == -EFBIG) {
		rc = 0;
		v = 0;
	} else if (rc == 0) {
		rc = xml_parse(&x, r->out != NULL ? (const char *)r->out : "",
		    r->outlen);
		/* Suspended still keeps the versions written before. */
		v = strcmp(x.root, "VersioningConfiguration") == 0 &&
		    x.status[0] != '\0';
		xml_free(&x);
	}
	if (rc == 0) {
		pthread_mutex_lock(&s->lock);
		s->versioning = v;
		pthread_mutex_unlock(&s->lock);
	}
	free(r->out);
	free(r);
	return rc < 0 ? rc : v;
}

#define S3_DEL_BATCH 1000	/* DeleteObjects' limit */
#define S3_VDEL_ONE_BY_ONE 2	/* up to this many: a listing per key */

/*
 * Deletes up to S3_DEL_BATCH objects in one DeleteObjects request
 * (quiet: the answer lists only failures).  rcs[i] gets 0 (deleted, or
 * there was nothing), -EROFS (AccessDenied: a lock) or -EIO.
 */
static int
del_batch(struct s3 *s, enum cf_bk_kind kind, const char *const *names,
    size_t n, int *rcs)
{
	unsigned char sha[crypto_hash_sha256_BYTES];
	char key[1024], b64[64], *body = NULL;
	struct s3_req *r = NULL;
	struct s3_xml x;
	size_t i, j, pos = 0, cap = 128 + n * (sizeof(key) + 32);
	int rc;

	memset(&x, 0, sizeof(x));
	body = malloc(cap);
	r = calloc(1, sizeof(*r));
	rc = body == NULL || r == NULL ? -ENOMEM : 0;
	if (rc == 0)
		rc = cat(body, cap, &pos, "<Delete xmlns=\"http://s3.amazonaws."
		    "com/doc/2006-03-01/\"><Quiet>true</Quiet>");
	for (i = 0; rc == 0 && i < n; i++) {
		/* Names and prefixes are [A-Za-z0-9._/-]: nothing to escape. */
		rc = obj_key(s, kind, names[i], key, sizeof(key));
		if (rc == 0)
			rc = cat(body, cap, &pos, "<Object><Key>");
		if (rc == 0)
			rc = cat(body, cap, &pos, key);
		if (rc == 0)
			rc = cat(body, cap, &pos, "</Key></Object>");
	}
	if (rc == 0)
		rc = cat(body, cap, &pos, "</Delete>");
	if (rc < 0)
		goto out;
	cf_bk_sha256(body, pos, sha);
	sodium_bin2base64(b64, sizeof(b64), sha, sizeof(sha),
	    sodium_base64_VARIANT_ORIGINAL);
	r->method = "POST";
	r->body = (const unsigned char *)body;
	r->bodylen = pos;
	r->checksum = b64;
	r->outmax = S3_LIST_BODY_MAX;
	pos = 0;
	rc = cat(r->url, sizeof(r->url), &pos, s->bucket_url);
	if (rc == 0)
		rc = cat(r->url, sizeof(r->url), &pos, "/?delete=");
	if (rc == 0)
		rc = s3_perform(s, r);
	if (rc == 0)
		rc = xml_parse(&x, r->out != NULL ? (const char *)r->out : "",
		    r->outlen);
	if (rc < 0)
		goto out;
	for (i = 0; i < n; i++) {
		rcs[i] = 0;
		if (obj_key(s, kind, names[i], key, sizeof(key)) < 0)
			continue;
		for (j = 0; j < x.nerrs; j++)
			if (strcmp(x.errs[j].key, key) == 0)
				rcs[i] = x.errs[j].size ? -EROFS : -EIO;
	}
out:
	xml_free(&x);
	if (r != NULL)
		free(r->out);
	free(r);
	free(body);
	return rc;
}

/*
 * Batch deletes in a versioned bucket: ListObjectVersions under the
 * names' directory finds every version and delete marker of the keys
 * to delete (or, for one or two keys, under each key), a HEAD of each
 * version (only where Object Lock may be on; 2 x conns at once) leaves
 * out versions under retention or a legal hold, and DeleteObjects
 * removes the rest by version id, up to 1000 a request and conns
 * requests at once.  rcs[i] is 0, -ENOENT (no version listed), -EROFS
 * (a version is locked; the key's other versions are deleted: objects
 * are immutable, so they hold the same bytes) or -EIO.
 */
struct vdel_key {
	char *key;
	size_t idx;		/* into names and rcs */
};

struct vdel_ver {
	size_t idx;
	char *vid;
	int marker;		/* a delete marker: cannot be locked */
	int skip;		/* locked or gone: not to be deleted */
	int rc;			/* -EROFS (locked) or the HEAD's error */
};

struct vdel {
	struct s3 *s;
	enum cf_bk_kind kind;
	const char *const *names;
	int *rcs;
	struct vdel_key *keys;	/* sorted by key */
	size_t nkeys;
	struct vdel_ver *v;
	size_t nv, capv;
	size_t *del;		/* indexes into v of the versions to delete */
	size_t ndel, per;	/* ...in batches of per */
	pthread_mutex_t m;	/* protects rcs while batches run */
	int64_t now;
};

static int
vdel_cmp(const void *a, const void *b)
{
	return strcmp(((const struct vdel_key *)a)->key,
	    ((const struct vdel_key *)b)->key);
}

static const struct vdel_key *
vdel_find(const struct vdel *d, const char *key)
{
	struct vdel_key k = { (char *)(uintptr_t)key, 0 };

	return bsearch(&k, d->keys, d->nkeys, sizeof(k), vdel_cmp);
}

/* Appends s with XML's five special characters escaped. */
static int
cat_xml(char *buf, size_t cap, size_t *pos, const char *s)
{
	char t[2] = "";
	int rc = 0;

	for (; rc == 0 && *s != '\0'; s++) {
		switch (*s) {
		case '&':
			rc = cat(buf, cap, pos, "&amp;");
			break;
		case '<':
			rc = cat(buf, cap, pos, "&lt;");
			break;
		case '>':
			rc = cat(buf, cap, pos, "&gt;");
			break;
		case '"':
			rc = cat(buf, cap, pos, "&quot;");
			break;
		case '\'':
			rc = cat(buf, cap, pos, "&apos;");
			break;
		default:
			t[0] = *s;
			rc = cat(buf, cap, pos, t);
		}
	}
	return rc;
}

/* Lists every version under prefix dir, keeping those of our keys. */
static int
vdel_list(struct vdel *d, const char *dir)
{
	struct s3 *s = d->s;
	struct s3_req *r;
	struct s3_xml x;
	const struct vdel_key *k;
	char *kmark = NULL, *vmark = NULL;
	size_t i, pos;
	int rc;

	memset(&x, 0, sizeof(x));
	r = calloc(1, sizeof(*r));
	if (r == NULL)
		return -ENOMEM;
	for (;;) {
		/* Query parameters in SigV4's canonical (sorted) order. */
		memset(r, 0, sizeof(*r));
		pos = 0;
		rc = cat(r->url, sizeof(r->url), &pos, s->bucket_url);
		if (rc == 0)
			rc = cat(r->url, sizeof(r->url), &pos, "/?");
		if (rc == 0 && kmark != NULL) {
			rc = cat(r->url, sizeof(r->url), &pos, "key-marker=");
			if (rc == 0)
				rc = cat_enc(r->url, sizeof(r->url), &pos,
				    kmark, 0);
			if (rc == 0)
				rc = cat(r->url, sizeof(r->url), &pos, "&");
		}
		if (rc == 0)
			rc = cat(r->url, sizeof(r->url), &pos,
			    "max-keys=1000&prefix=");
		if (rc == 0)
			rc = cat_enc(r->url, sizeof(r->url), &pos, dir, 0);
		if (rc == 0 && vmark != NULL) {
			rc = cat(r->url, sizeof(r->url), &pos,
			    "&version-id-marker=");
			if (rc == 0)
				rc = cat_enc(r->url, sizeof(r->url), &pos,
				    vmark, 0);
		}
		if (rc == 0)
			rc = cat(r->url, sizeof(r->url), &pos, "&versions=");
		if (rc < 0)
			goto out;
		rc = list_get(s, r, &x);
		free(r->out);
		r->out = NULL;
		if (rc < 0)
			goto out;
		for (i = 0; i < x.nents; i++) {
			if (x.ents[i].vid == NULL)
				continue;	/* not a version */
			k = vdel_find(d, x.ents[i].key);
			if (k == NULL)
				continue;
			if (d->nv == d->capv) {
				size_t c = d->capv ? d->capv * 2 : 256;
				struct vdel_ver *v = realloc(d->v,
				    c * sizeof(*v));

				if (v == NULL) {
					rc = -ENOMEM;
					goto out;
				}
				d->v = v;
				d->capv = c;
			}
			d->v[d->nv].idx = k->idx;
			d->v[d->nv].vid = x.ents[i].vid;
			d->v[d->nv].marker = x.ents[i].marker;
			d->v[d->nv].skip = 0;
			d->v[d->nv].rc = 0;
			x.ents[i].vid = NULL;
			if (!d->v[d->nv].marker)
				d->rcs[k->idx] = 0;	/* it exists */
			d->nv++;
		}
		rc = next_page2(&x, &kmark, &vmark);
		if (rc > 0)
			break;
		if (rc < 0)
			goto out;
		xml_free(&x);
	}
	rc = 0;
out:
	xml_free(&x);
	free(kmark);
	free(vmark);
	free(r->out);
	free(r);
	return rc;
}

/* HEADs one version: locked (retention ahead, legal hold) or gone: skip. */
static int
vdel_head(void *arg, size_t i)
{
	struct vdel *d = arg;
	struct vdel_ver *v = &d->v[i];
	struct s3_req *r;
	size_t pos;
	int64_t until;
	int rc;

	if (v->marker)
		return 0;
	r = calloc(1, sizeof(*r));
	if (r == NULL)
		return -ENOMEM;
	r->method = "HEAD";
	rc = obj_url(d->s, d->kind, d->names[v->idx], r);
	pos = strlen(r->url);
	if (rc == 0)
		rc = cat(r->url, sizeof(r->url), &pos, "?versionId=");
	if (rc == 0)
		rc = cat_enc(r->url, sizeof(r->url), &pos, v->vid, 0);
	if (rc == 0)
		rc = s3_perform(d->s, r);
	if (rc == 0) {
		until = r->retain_until[0] != '\0' ?
		    parse_iso8601(r->retain_until) : 0;
		if (until > d->now || r->legal_hold) {
			v->skip = 1;
			v->rc = -EROFS;
		}
	} else if (rc != -ENOMEM) {
		/* Gone meanwhile: nothing to do; else that key failed. */
		v->skip = 1;
		v->rc = rc == -ENOENT ? 0 : rc;
		rc = 0;
	}
	free(r);
	return rc;
}

/* DeleteObjects of batch b: versions del[b * per ...]. */
static int
vdel_batch(void *arg, size_t b)
{
	struct vdel *d = arg;
	size_t from = b * d->per, to = from + d->per > d->ndel ? d->ndel :
	    from + d->per;
	unsigned char sha[crypto_hash_sha256_BYTES];
	char key[1024], b64[64], *body = NULL;
	struct s3_req *r = NULL;
	struct s3_xml x;
	const struct vdel_key *k;
	size_t i, pos = 0, cap = 128 + (to - from) * (sizeof(key) + 320);
	int rc;

	memset(&x, 0, sizeof(x));
	body = malloc(cap);
	r = calloc(1, sizeof(*r));
	rc = body == NULL || r == NULL ? -ENOMEM : 0;
	if (rc == 0)
		rc = cat(body, cap, &pos, "<Delete xmlns=\"http://s3.amazonaws."
		    "com/doc/2006-03-01/\"><Quiet>true</Quiet>");
	for (i = from; rc == 0 && i < to; i++) {
		const struct vdel_ver *v = &d->v[d->del[i]];

		rc = obj_key(d->s, d->kind, d->names[v->idx], key,
		    sizeof(key));
		if (rc == 0)
			rc = cat(body, cap, &pos, "<Object><Key>");
		if (rc == 0)
			rc = cat(body, cap, &pos, key);
		if (rc == 0)
			rc = cat(body, cap, &pos, "</Key><VersionId>");
		if (rc == 0)
			rc = cat_xml(body, cap, &pos, v->vid);
		if (rc == 0)
			rc = cat(body, cap, &pos, "</VersionId></Object>");
	}
	if (rc == 0)
		rc = cat(body, cap, &pos, "</Delete>");
	if (rc < 0)
		goto out;
	cf_bk_sha256(body, pos, sha);
	sodium_bin2base64(b64, sizeof(b64), sha, sizeof(sha),
	    sodium_base64_VARIANT_ORIGINAL);
	r->method = "POST";
	r->body = (const unsigned char *)body;
	r->bodylen = pos;
	r->checksum = b64;
	r->outmax = S3_LIST_BODY_MAX;
	pos = 0;
	rc = cat(r->url, sizeof(r->url), &pos, d->s->bucket_url);
	if (rc == 0)
		rc = cat(r->url, sizeof(r->url), &pos, "/?delete=");
	if (rc == 0)
		rc = s3_perform(d->s, r);
	if (rc == 0)
		rc = xml_parse(&x, r->out != NULL ? (const char *)r->out : "",
		    r->outlen);
	if (rc < 0)
		goto out;
	pthread_mutex_lock(&d->m);
	for (i = 0; i < x.nerrs; i++) {
		k = vdel_find(d, x.errs[i].key);
		if (k != NULL && d->rcs[k->idx] == 0)
			d->rcs[k->idx] = x.errs[i].size ? -EROFS : -EIO;
	}
	pthread_mutex_unlock(&d->m);
out:
	xml_free(&x);
	if (r != NULL)
		free(r->out);
	free(r);
	free(body);
	return rc;
}

static int
s3_del_versions(struct s3 *s, enum cf_bk_kind kind, const char *const *names,
    size_t n, int *rcs)
{
	static const char *const dirs[] = { NULL, "data/", "index/",
	    "snapshots/", "locks/" };
	struct vdel d;
	char key[1024], dir[1024];
	size_t i, j, ndirs = 0;
	int rc, len;

	memset(&d, 0, sizeof(d));
	if (pthread_mutex_init(&d.m, NULL) != 0)
		return -ENOMEM;
	d.s = s;
	d.kind = kind;
	d.names = names;
	d.rcs = rcs;
	d.now = (int64_t)time(NULL);
	d.keys = calloc(n, sizeof(*d.keys));
	rc = -ENOMEM;
	if (d.keys == NULL)
		goto out;
	for (i = 0; i < n; i++) {
		rcs[i] = -ENOENT;	/* until a version is listed */
		rc = obj_key(s, kind, names[i], key, sizeof(key));
		if (rc < 0)
			goto out;
		d.keys[i].key = strdup(key);
		d.keys[i].idx = i;
		d.nkeys++;
		if (d.keys[i].key == NULL) {
			rc = -ENOMEM;
			goto out;
		}
	}
	qsort(d.keys, d.nkeys, sizeof(*d.keys), vdel_cmp);
	/*
	 * Which listings: packs of a few data/XX/ directories list just
	 * those (cheaper in a large repository), else the whole directory.
	 */
	if (kind == CF_BK_KIND_PACK)
		for (i = 0; i < n && ndirs <= 8; i++)
			if (i == 0 || strncmp(names[d.keys[i].idx],
			    names[d.keys[i - 1].idx], 2) != 0)
				ndirs++;
	if (n <= S3_VDEL_ONE_BY_ONE || kind < CF_BK_KIND_PACK ||
	    kind > CF_BK_KIND_LOCK) {
		/* A few keys: list each one's versions alone. */
		for (i = 0; i < d.nkeys; i++) {
			rc = vdel_list(&d, d.keys[i].key);
			if (rc < 0)
				goto out;
		}
	} else if (kind == CF_BK_KIND_PACK && ndirs <= 8) {
		for (i = 0; i < n; i = j) {
			for (j = i + 1; j < n && strncmp(
			    names[d.keys[j].idx], names[d.keys[i].idx], 2) == 0;
			    j++)
				;
			len = snprintf(dir, sizeof(dir), "%sdata/%.2s/",
			    s->prefix, names[d.keys[i].idx]);
			rc = len < 0 || (size_t)len >= sizeof(dir) ?
			    -ENAMETOOLONG : vdel_list(&d, dir);
			if (rc < 0)
				goto out;
		}
	} else {
		len = snprintf(dir, sizeof(dir), "%s%s", s->prefix, dirs[kind]);
		rc = len < 0 || (size_t)len >= sizeof(dir) ? -ENAMETOOLONG :
		    vdel_list(&d, dir);
		if (rc < 0)
			goto out;
	}
	/* Where a version may be locked, ask each one first (never try). */
	if (s->objlock) {
		rc = par_run(s->conns * 2, d.nv, vdel_head, &d);
		if (rc < 0)
			goto out;
		for (i = 0; i < d.nv; i++)
			if (d.v[i].rc < 0 && rcs[d.v[i].idx] == 0)
				rcs[d.v[i].idx] = d.v[i].rc;
	}
	/*
	 * DeleteObjects, several at once: a server may delete the keys of
	 * one request one after the other (Ceph RGW: ~10 ms per version),
	 * so conns requests of up to 1000 share the work.
	 */
	d.del = calloc(d.nv + 1, sizeof(*d.del));
	if (d.del == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	for (i = 0; i < d.nv; i++)
		if (!d.v[i].skip)
			d.del[d.ndel++] = i;
	d.per = (d.ndel + s->conns - 1) / s->conns;
	if (d.per < S3_DEL_BATCH / 10)
		d.per = S3_DEL_BATCH / 10;	/* small sets: one request */
	if (d.per > S3_DEL_BATCH)
		d.per = S3_DEL_BATCH;
	rc = 0;
	if (d.ndel > 0)
		rc = par_run(s->conns, (d.ndel + d.per - 1) / d.per,
		    vdel_batch, &d);
out:
	for (i = 0; i < d.nkeys; i++)
		free(d.keys[i].key);
	free(d.keys);
	for (i = 0; i < d.nv; i++)
		free(d.v[i].vid);
	free(d.v);
	free(d.del);
	pthread_mutex_destroy(&d.m);
	return rc;
}

/*
 * Deletes many objects of one kind.  In a bucket without versions, 1000
 * at a time with DeleteObjects; in a versioned one (Object Lock) every
 * version and delete marker of each, by version id (s3_del_versions).
 */
static int
s3_del_many(void *ctx, enum cf_bk_kind kind, const char *const *names,
    size_t n, int *rcs)
{
	struct s3 *s = ctx;
	size_t i, k;
	int rc, v;

	v = s->lock_mode[0] != '\0' ? 1 : s3_versioned(s);
	if (v < 0)
		return v;
	if (v) {
		rc = s3_del_versions(s, kind, names, n, rcs);
		for (i = 0; rc == 0 && i < n; i++)
			if (rcs[i] == -ENOENT)
				rcs[i] = 0;
		return rc;
	}
	for (i = 0; i < n; i += k) {
		k = n - i < S3_DEL_BATCH ? n - i : S3_DEL_BATCH;
		rc = del_batch(s, kind, names + i, k, rcs + i);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* Packs go up on as many threads as there are connections. */
static unsigned
s3_parallel_puts(void *ctx)
{
	struct s3 *s = ctx;

	return s->conns;
}

const struct cf_bk_store_ops cf_bk_store_s3_ops = {
	.name = "s3",
	.put = s3_put,
	.get = s3_get,
	.get_range = s3_get_range,
	.stat = s3_stat,
	.list = s3_list,
	.del = s3_del,
	.del_many = s3_del_many,
	.close = s3_close,
	.cleanup = s3_cleanup,
	.parallel_puts = s3_parallel_puts,
};

/* ---- opening: URL, environment, credentials ------------------------------ */

/* The options of one store, before they become a struct s3. */
struct s3_opts {
	char bucket[64];
	char prefix[512];
	char *endpoint;		/* the rest are malloc'd or NULL */
	char *region;
	char *style;
	char *ca;
	char *credentials;
	char *profile;
	char *lock;		/* none, governance, compliance */
	char *lock_days;
	char *lock_until;	/* seconds since the epoch */
	char *max_up, *max_down;	/* bandwidth limits, bytes/s */
	char *resolve;		/* HOST:PORT:ADDR[,...] (CURLOPT_RESOLVE) */
};

static void
opts_free(struct s3_opts *o)
{
	free(o->endpoint);
	free(o->region);
	free(o->style);
	free(o->ca);
	free(o->credentials);
	free(o->profile);
	free(o->lock);
	free(o->lock_days);
	free(o->lock_until);
	free(o->max_up);
	free(o->max_down);
	free(o->resolve);
}

static int
hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* A percent-decoded copy of s[0..n); NULL on bad escapes or no memory. */
static char *
pct_decode(const char *s, size_t n)
{
	char *d = malloc(n + 1);
	size_t i, j = 0;

	if (d == NULL)
		return NULL;
	for (i = 0; i < n; i++) {
		if (s[i] == '%') {
			int hi, lo;

			if (i + 2 >= n) {
				free(d);
				return NULL;
			}
			hi = hexval((unsigned char)s[i + 1]);
			lo = hexval((unsigned char)s[i + 2]);
			if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
				free(d);
				return NULL;
			}
			d[j++] = (char)(hi << 4 | lo);
			i += 2;
		} else {
			d[j++] = s[i];
		}
	}
	d[j] = '\0';
	return d;
}

static int
set_opt(char **dst, const char *val, size_t n)
{
	char *v = pct_decode(val, n);

	if (v == NULL)
		return -EINVAL;
	free(*dst);
	*dst = v;
	return 0;
}

/*
 * Parses "s3://bucket[/prefix][?key=value&...]".  Bucket names follow
 * S3's rules (3-63 of [a-z0-9.-]); the prefix may hold [A-Za-z0-9._-]
 * segments separated by single slashes.
 */
static int
parse_url(const char *url, struct s3_opts *o)
{
	const char *p = url + 5, *q, *end, *seg;
	size_t n, i;
	int rc;

	q = strchr(p, '?');
	end = q != NULL ? q : p + strlen(p);
	n = strcspn(p, "/?");
	if (n < 3 || n > 63)
		return -EINVAL;
	for (i = 0; i < n; i++) {
		char c = p[i];

		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		    c == '.' || c == '-'))
			return -EINVAL;
	}
	memcpy(o->bucket, p, n);
	o->bucket[n] = '\0';
	p += n;
	if (*p == '/')
		p++;
	/* The prefix, segment by segment. */
	n = 0;
	if (end > p && end[-1] == '/')
		end--;			/* one trailing slash */
	while (p < end) {
		seg = p;
		while (p < end && *p != '/')
			p++;
		if (p == seg)
			return -EINVAL;		/* "//" */
		if ((p - seg == 1 && seg[0] == '.') ||
		    (p - seg == 2 && seg[0] == '.' && seg[1] == '.'))
			return -EINVAL;
		for (i = 0; seg + i < p; i++) {
			char c = seg[i];

			if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			    (c >= '0' && c <= '9') || c == '.' || c == '-' ||
			    c == '_'))
				return -EINVAL;
		}
		if (n + (size_t)(p - seg) + 2 > sizeof(o->prefix))
			return -ENAMETOOLONG;
		memcpy(o->prefix + n, seg, (size_t)(p - seg));
		n += (size_t)(p - seg);
		o->prefix[n++] = '/';
		if (p < end)
			p++;
	}
	o->prefix[n] = '\0';
	if (q == NULL)
		return 0;
	for (p = q + 1; *p != '\0'; p = *end == '&' ? end + 1 : end) {
		const char *eq;
		size_t klen;

		end = p + strcspn(p, "&");
		eq = memchr(p, '=', (size_t)(end - p));
		if (eq == NULL)
			return -EINVAL;
		klen = (size_t)(eq - p);
		eq++;
		n = (size_t)(end - eq);
#define KEY(k) (klen == sizeof(k) - 1 && memcmp(p, k, klen) == 0)
		if (KEY("endpoint"))
			rc = set_opt(&o->endpoint, eq, n);
		else if (KEY("region"))
			rc = set_opt(&o->region, eq, n);
		else if (KEY("style"))
			rc = set_opt(&o->style, eq, n);
		else if (KEY("ca"))
			rc = set_opt(&o->ca, eq, n);
		else if (KEY("credentials"))
			rc = set_opt(&o->credentials, eq, n);
		else if (KEY("profile"))
			rc = set_opt(&o->profile, eq, n);
		else if (KEY("lock"))
			rc = set_opt(&o->lock, eq, n);
		else if (KEY("lock_days"))
			rc = set_opt(&o->lock_days, eq, n);
		else if (KEY("lock_until"))
			rc = set_opt(&o->lock_until, eq, n);
		else if (KEY("max_up"))
			rc = set_opt(&o->max_up, eq, n);
		else if (KEY("max_down"))
			rc = set_opt(&o->max_down, eq, n);
		else if (KEY("resolve"))
			rc = set_opt(&o->resolve, eq, n);
		else
			rc = -EINVAL;
#undef KEY
		if (rc < 0)
			return rc;
		if (*end == '\0')
			break;
	}
	return 0;
}

/* Fills an option from the first set environment variable, if unset. */
static int
env_opt(char **dst, const char *a, const char *b)
{
	const char *v = NULL;

	if (*dst != NULL)
		return 0;
	if (a != NULL && (v = getenv(a)) != NULL && v[0] == '\0')
		v = NULL;
	if (v == NULL && b != NULL && (v = getenv(b)) != NULL && v[0] == '\0')
		v = NULL;
	if (v == NULL)
		return 0;
	*dst = strdup(v);
	return *dst == NULL ? -ENOMEM : 0;
}

static char *
trim(char *s)
{
	char *e;

	while (*s == ' ' || *s == '\t')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' ||
	    e[-1] == '\n'))
		*--e = '\0';
	return s;
}

/*
 * Reads the credentials of profile from an AWS-style shared credentials
 * file (aws_access_key_id, aws_secret_access_key, aws_session_token
 * under [profile]).  The file must be a regular file owned by us and
 * not readable or writable by group or others: -EPERM otherwise.
 */
static int
read_credentials(const char *path, const char *profile, char **ak, char **sk,
    char **tok)
{
	char line[1024], section[128] = "", *k, *v, *eq;
	struct stat st;
	FILE *f = NULL;
	int fd, rc;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	rc = -EPERM;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) ||
	    (st.st_mode & 077) != 0 || st.st_uid != geteuid()) {
		close(fd);
		goto out;
	}
	f = fdopen(fd, "r");
	if (f == NULL) {
		rc = -errno;
		close(fd);
		goto out;
	}
	rc = 0;
	while (rc == 0 && fgets(line, sizeof(line), f) != NULL) {
		k = trim(line);
		if (*k == '#' || *k == ';' || *k == '\0')
			continue;
		if (*k == '[') {
			snprintf(section, sizeof(section), "%s", k + 1);
			section[strcspn(section, "]")] = '\0';
			k = trim(section);
			memmove(section, k, strlen(k) + 1);
			continue;
		}
		if (strcmp(section, profile) != 0)
			continue;
		eq = strchr(k, '=');
		if (eq == NULL)
			continue;
		*eq = '\0';
		v = trim(eq + 1);
		k = trim(k);
		if (strcmp(k, "aws_access_key_id") == 0 && *ak == NULL)
			rc = (*ak = strdup(v)) == NULL ? -ENOMEM : 0;
		else if (strcmp(k, "aws_secret_access_key") == 0 && *sk == NULL)
			rc = (*sk = strdup(v)) == NULL ? -ENOMEM : 0;
		else if (strcmp(k, "aws_session_token") == 0 && *tok == NULL)
			rc = (*tok = strdup(v)) == NULL ? -ENOMEM : 0;
	}
	if (rc == 0 && (*ak == NULL || *sk == NULL))
		rc = -ENOKEY;	/* the profile lacks a key */
out:
	sodium_memzero(line, sizeof(line));
	if (f != NULL)
		fclose(f);
	return rc;
}

/* Unsigned decimal from the environment, or def. */
static long
env_num(const char *name, long def, long min, long max)
{
	const char *v = getenv(name);
	char *end;
	long n;

	if (v == NULL || *v == '\0')
		return def;
	errno = 0;
	n = strtol(v, &end, 10);
	if (errno != 0 || *end != '\0' || n < min || n > max)
		return def;
	return n;
}

/* Sends a bucket-level HEAD (or PUT to create it). */
static int
bucket_req(struct s3 *s, const char *method, const char *region)
{
	static const char fmt[] = "<CreateBucketConfiguration xmlns="
	    "\"http://s3.amazonaws.com/doc/2006-03-01/\"><LocationConstraint>"
	    "%s</LocationConstraint></CreateBucketConfiguration>";
	char body[256];
	struct s3_req *r;
	size_t pos = 0;
	int rc;

	r = calloc(1, sizeof(*r));
	if (r == NULL)
		return -ENOMEM;
	r->method = method;
	r->outmax = S3_ERRBODY_MAX;
	if (strcmp(method, "PUT") == 0 && strcmp(region, "us-east-1") != 0) {
		snprintf(body, sizeof(body), fmt, region);
		r->body = (const unsigned char *)body;
		r->bodylen = strlen(body);
	}
	rc = cat(r->url, sizeof(r->url), &pos, s->bucket_url);
	if (rc == 0)
		rc = cat(r->url, sizeof(r->url), &pos, "/");
	if (rc == 0)
		rc = s3_perform(s, r);
	free(r->out);
	free(r);
	return rc;
}

/* A decimal number in [min, max], or -1. */
static long long
opt_num(const char *v, long long min, long long max)
{
	char *end;
	long long n;

	if (v == NULL || *v < '0' || *v > '9')
		return -1;
	errno = 0;
	n = strtoll(v, &end, 10);
	if (errno != 0 || *end != '\0' || n < min || n > max)
		return -1;
	return n;
}

/*
 * A rate in bytes per second: digits and an optional binary suffix K, M
 * or G (KiB/s, MiB/s, GiB/s); at least 1 KiB/s (below that libcurl's
 * stall detection would fire).  -1 if malformed.
 */
static double
opt_rate(const char *v)
{
	char num[32];
	size_t n = strlen(v);
	long long r, mul = 1;

	if (n == 0 || n >= sizeof(num))
		return -1;
	memcpy(num, v, n + 1);
	switch (num[n - 1]) {
	case 'K': case 'k':
		mul = 1024;
		break;
	case 'M': case 'm':
		mul = 1024 * 1024;
		break;
	case 'G': case 'g':
		mul = 1024LL * 1024 * 1024;
		break;
	}
	if (mul > 1)
		num[n - 1] = '\0';
	r = opt_num(num, 1, 1LL << 40);
	if (r < 0 || r * mul < 1024)
		return -1;
	return (double)(r * mul);
}

/*
 * The resolve= option: comma-separated HOST:PORT:ADDR entries, each
 * handed to CURLOPT_RESOLVE, so HOST:PORT connects to ADDR without a
 * DNS lookup (virtual-host names of a private endpoint, a pinned
 * address).  The request still names HOST (Host header, SigV4, TLS
 * name check).  HOST is [A-Za-z0-9.-], PORT 1-65535, ADDR an IPv4
 * address or a bracketed IPv6 one; anything else is -EINVAL.
 */
static int
resolve_list(const char *v, struct curl_slist **out)
{
	struct curl_slist *l = NULL, *t;
	char ent[256], *p, *c1, *c2;
	size_t n, i;
	long long port;
	int rc = -EINVAL;

	*out = NULL;
	if (v[0] == '\0' || v[strlen(v) - 1] == ',')
		return -EINVAL;
	while (*v != '\0') {
		n = strcspn(v, ",");
		if (n == 0 || n >= sizeof(ent))
			goto out;
		memcpy(ent, v, n);
		ent[n] = '\0';
		v += n + (v[n] == ',');
		c1 = strchr(ent, ':');
		c2 = c1 != NULL ? strchr(c1 + 1, ':') : NULL;
		if (c1 == NULL || c2 == NULL || c1 == ent || c2[1] == '\0')
			goto out;
		for (p = ent; p < c1; p++)
			if (!((*p >= 'a' && *p <= 'z') ||
			    (*p >= 'A' && *p <= 'Z') ||
			    (*p >= '0' && *p <= '9') || *p == '.' || *p == '-'))
				goto out;
		*c2 = '\0';
		port = opt_num(c1 + 1, 1, 65535);
		*c2 = ':';
		if (port < 0)
			goto out;
		p = c2 + 1;
		if (p[0] == '[') {
			i = strlen(p);
			if (i < 4 || p[i - 1] != ']' ||
			    strspn(p + 1, "0123456789abcdefABCDEF:.") != i - 2)
				goto out;
		} else if (strspn(p, "0123456789.") != strlen(p)) {
			goto out;
		}
		t = curl_slist_append(l, ent);
		if (t == NULL) {
			rc = -ENOMEM;
			goto out;
		}
		l = t;
	}
	if (l == NULL)
		goto out;
	*out = l;
	l = NULL;
	rc = 0;
out:
	curl_slist_free_all(l);
	return rc;
}

/*
 * Object Lock: GetObjectLockConfiguration (GET bucket?object-lock)
 * tells whether the bucket has it and its default retention.  The URL's
 * lock= / lock_days= win; without them a bucket default retention is
 * applied explicitly (so lock_until can cap it).  -EOPNOTSUPP if the
 * URL asks for a lock the bucket does not have.
 */
static int
lock_setup(struct s3 *s, const struct s3_opts *o)
{
	struct s3_req *r;
	const char *b, *m;
	long long days = -1;
	int enabled = 0, none = 0, rc;

	if (o->lock_until != NULL) {
		s->lock_max = opt_num(o->lock_until, 1, 253402300799LL);
		if (s->lock_max < 0)
			return -EINVAL;
	}
	if (o->lock_days != NULL) {
		days = opt_num(o->lock_days, 1, 36500);
		if (days < 0)
			return -EINVAL;
	}
	if (o->lock != NULL) {
		/*
		 * none: no retention from us, but the bucket is still asked
		 * (deletes must know whether versions may be locked).
		 */
		none = strcmp(o->lock, "none") == 0;
		if (strcmp(o->lock, "governance") == 0)
			snprintf(s->lock_mode, sizeof(s->lock_mode),
			    "GOVERNANCE");
		else if (strcmp(o->lock, "compliance") == 0)
			snprintf(s->lock_mode, sizeof(s->lock_mode),
			    "COMPLIANCE");
		else if (!none)
			return -EINVAL;
		/* lock= needs lock_days=, lock=none refuses it. */
		if (none ? o->lock_days != NULL : days < 0)
			return -EINVAL;
	} else if (o->lock_days != NULL) {
		return -EINVAL;
	}
	rc = bucket_get(s, "object-lock=", &r);
	if (r == NULL)
		return rc;
	b = r->out != NULL ? (const char *)r->out : "";
	/*
	 * Any failure (404 on a bucket without a lock, 403, 501): no
	 * retention from us.  Only a 404 proves that no version can be
	 * locked; otherwise batch deletes check each version first.
	 */
	s->objlock = rc != -ENOENT;
	if (rc == 0 && r->out != NULL) {
		r->out[r->outlen] = '\0';	/* s3_write keeps one byte */
		enabled = strstr(b, "<ObjectLockEnabled>Enabled<") != NULL;
	}
	if (enabled && s->lock_mode[0] == '\0' && !none) {
		/* The bucket's default retention, applied explicitly. */
		m = strstr(b, "<Mode>");
		if (m != NULL && strncmp(m + 6, "COMPLIANCE<", 11) == 0)
			snprintf(s->lock_mode, sizeof(s->lock_mode),
			    "COMPLIANCE");
		else if (m != NULL && strncmp(m + 6, "GOVERNANCE<", 11) == 0)
			snprintf(s->lock_mode, sizeof(s->lock_mode),
			    "GOVERNANCE");
		if ((m = strstr(b, "<Days>")) != NULL)
			days = strtol(m + 6, NULL, 10);
		else if ((m = strstr(b, "<Years>")) != NULL)
			days = strtol(m + 7, NULL, 10) * 365;
		if (days <= 0 || days > 36500)
			s->lock_mode[0] = '\0';	/* enabled, no rule */
	}
	if (rc == 0)
		s->objlock = enabled;
	free(r->out);
	free(r);
	if (s->lock_mode[0] != '\0' && !enabled)
		return -EOPNOTSUPP;	/* lock= on a bucket without it */
	s->lock_days = days;
	s->versioning = enabled ? 1 : -1;	/* Object Lock implies it */
	return 0;
}

int
bk_store_s3_open(struct cf_bk_store **out, const char *url, int flags)
{
	struct s3_opts o;
	struct s3 *s = NULL;
	const char *host, *profile;
	char *ak = NULL, *sk = NULL, *tok = NULL;
	size_t n;
	int rc, path_style;

	*out = NULL;
	memset(&o, 0, sizeof(o));
	rc = -EINVAL;
	if (strncmp(url, "s3://", 5) != 0)
		goto out;
	pthread_once(&s3_once, s3_global_init);
	rc = -EIO;
	if (s3_global_rc != CURLE_OK)
		goto out;
	rc = parse_url(url, &o);
	if (rc < 0)
		goto out;
	rc = env_opt(&o.endpoint, "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL");
	if (rc == 0)
		rc = env_opt(&o.region, "AWS_REGION", "AWS_DEFAULT_REGION");
	if (rc == 0)
		rc = env_opt(&o.style, "COFFER_S3_ADDRESSING", NULL);
	if (rc == 0)
		rc = env_opt(&o.ca, "COFFER_S3_CA_FILE", NULL);
	if (rc == 0)
		rc = env_opt(&o.credentials, "COFFER_S3_CREDENTIALS_FILE",
		    NULL);
	if (rc == 0)
		rc = env_opt(&o.max_up, "COFFER_S3_MAX_UP", NULL);
	if (rc == 0)
		rc = env_opt(&o.max_down, "COFFER_S3_MAX_DOWN", NULL);
	if (rc == 0)
		rc = env_opt(&o.resolve, "COFFER_S3_RESOLVE", NULL);
	if (rc < 0)
		goto out;

	rc = -ENOMEM;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		goto out;
	if (pthread_mutex_init(&s->lock, NULL) != 0) {
		free(s);
		s = NULL;
		goto out;
	}
	s->versioning = -1;
	pthread_mutex_init(&s->up.m, NULL);
	pthread_mutex_init(&s->down.m, NULL);
	rc = -EINVAL;
	if ((o.max_up != NULL && (s->up.bps = opt_rate(o.max_up)) <= 0) ||
	    (o.max_down != NULL && (s->down.bps = opt_rate(o.max_down)) <= 0))
		goto out;
	rc = -ENOMEM;
	s->max_attempts = (unsigned)env_num("COFFER_S3_MAX_ATTEMPTS",
	    S3_ATTEMPTS_DEFAULT, 1, 100);
	s->retry_ms = env_num("COFFER_S3_RETRY_SECONDS",
	    S3_RETRY_SECONDS_DEFAULT, 0, 86400) * 1000L;
	s->part_size = (size_t)env_num("COFFER_S3_PART_SIZE",
	    S3_PART_SIZE_DEFAULT, S3_PART_SIZE_MIN, S3_PART_SIZE_MAX);
	s->conns = (unsigned)env_num("COFFER_S3_CONNECTIONS",
	    S3_CONNS_DEFAULT, 1, S3_POOL_MAX);
	s->uploads_page = S3_LIST_PAGE;
	s->prefix = strdup(o.prefix);
	if (s->prefix == NULL)
		goto out;
	if (o.region == NULL) {
		o.region = strdup("us-east-1");
		if (o.region == NULL)
			goto out;
	}
	rc = -EINVAL;
	for (n = 0; o.region[n] != '\0'; n++)
		if (!((o.region[n] >= 'a' && o.region[n] <= 'z') ||
		    (o.region[n] >= '0' && o.region[n] <= '9') ||
		    o.region[n] == '-'))
			goto out;
	if (n == 0 || n > 32)
		goto out;
	rc = -ENOMEM;
	if (asprintf(&s->sigv4, "aws:amz:%s:s3", o.region) < 0) {
		s->sigv4 = NULL;
		goto out;
	}

	/*
	 * Addressing: path style for a configured endpoint (an IP, Ceph,
	 * MinIO), virtual-host style for AWS itself; "style" overrides.
	 * A dotted bucket breaks virtual-host TLS names: path style.
	 */
	path_style = o.endpoint != NULL;
	if (o.endpoint == NULL &&
	    asprintf(&o.endpoint, "https://s3.%s.amazonaws.com", o.region) < 0) {
		o.endpoint = NULL;
		goto out;
	}
	rc = -EINVAL;
	if (o.style != NULL && strcmp(o.style, "path") == 0)
		path_style = 1;
	else if (o.style != NULL && strcmp(o.style, "virtual") == 0)
		path_style = 0;
	else if (o.style != NULL)
		goto out;
	if (strchr(o.bucket, '.') != NULL)
		path_style = 1;
	n = strlen(o.endpoint);
	while (n > 0 && o.endpoint[n - 1] == '/')
		o.endpoint[--n] = '\0';
	if (strncmp(o.endpoint, "https://", 8) == 0)
		host = o.endpoint + 8;
	else if (strncmp(o.endpoint, "http://", 7) == 0)
		host = o.endpoint + 7;
	else
		goto out;
	if (*host == '\0' || strpbrk(host, "/?#@ ") != NULL)
		goto out;	/* scheme://host[:port] only */
	rc = -ENOMEM;
	if (path_style) {
		if (asprintf(&s->bucket_url, "%s/%s", o.endpoint,
		    o.bucket) < 0)
			s->bucket_url = NULL;
	} else {
		if (asprintf(&s->bucket_url, "%.*s%s.%s",
		    (int)(host - o.endpoint), o.endpoint, o.bucket,
		    host) < 0)
			s->bucket_url = NULL;
	}
	if (s->bucket_url == NULL)
		goto out;
	if (o.ca != NULL) {
		s->ca_file = strdup(o.ca);
		if (s->ca_file == NULL)
			goto out;
	}
	if (o.resolve != NULL) {
		rc = resolve_list(o.resolve, &s->resolve);
		if (rc < 0)
			goto out;
		rc = -ENOMEM;
	}

	/* Credentials: the environment, else the credentials file. */
	if (getenv("AWS_ACCESS_KEY_ID") != NULL &&
	    getenv("AWS_SECRET_ACCESS_KEY") != NULL && o.credentials == NULL) {
		ak = strdup(getenv("AWS_ACCESS_KEY_ID"));
		sk = strdup(getenv("AWS_SECRET_ACCESS_KEY"));
		if (getenv("AWS_SESSION_TOKEN") != NULL &&
		    getenv("AWS_SESSION_TOKEN")[0] != '\0') {
			tok = strdup(getenv("AWS_SESSION_TOKEN"));
			if (tok == NULL)
				goto out;
		}
		if (ak == NULL || sk == NULL)
			goto out;
	} else if (o.credentials != NULL) {
		profile = o.profile != NULL ? o.profile :
		    getenv("AWS_PROFILE") != NULL ? getenv("AWS_PROFILE") :
		    "default";
		rc = read_credentials(o.credentials, profile, &ak, &sk, &tok);
		if (rc < 0)
			goto out;
	} else {
		rc = -ENOKEY;
		goto out;
	}
	rc = -EINVAL;
	if (strpbrk(ak, ":\r\n") != NULL || strpbrk(sk, "\r\n") != NULL ||
	    (tok != NULL && strpbrk(tok, "\r\n") != NULL))
		goto out;	/* would break the header or the user:pass */
	s->access_key = ak;
	s->secret = sk;
	ak = sk = NULL;
	rc = -ENOMEM;
	if (tok != NULL &&
	    asprintf(&s->token_hdr, "x-amz-security-token: %s", tok) < 0) {
		s->token_hdr = NULL;
		goto out;
	}

	/* The bucket must exist (and the credentials work) from the start. */
	rc = bucket_req(s, "HEAD", o.region);
	if (rc == -ENOENT && (flags & CF_BK_STORE_CREATE))
		rc = bucket_req(s, "PUT", o.region);
	if (rc < 0)
		goto out;
	rc = lock_setup(s, &o);
	if (rc < 0)
		goto out;
	rc = cf_bk_store_new(out, &cf_bk_store_s3_ops, s);
	if (rc == 0)
		s = NULL;
out:
	s3_close(s);
	free(ak);
	free_secret(sk);
	free_secret(tok);
	opts_free(&o);
	return rc;
}
