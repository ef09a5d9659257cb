/*
 * ks_kms_kmip.c - the "kmip" KMS provider: root keys wrapped by a KEK that
 * never leaves a KMIP key manager.
 *
 * The provider speaks KMIP 1.4 over mutual TLS (OpenSSL, TLS 1.2 or
 * newer, the server verified against `ca`, our `cert`/`key` presented).
 * Wrapping is the server's Encrypt with AES-256-GCM, a 12-byte random IV
 * of ours, a 16-byte tag and the 48-byte envelope header as AAD;
 * unwrapping is its Decrypt.  rotate is Create (AES-256) + Activate.  It
 * never uses Get, Register or anything else that would move a KEK or a
 * root key into server storage.  The wire format and the blob layout are
 * in docs/format/kmip.md; configuration and operations in docs/kms.md.
 *
 * State: HOME/kms/NAME/current holds the unique identifier of the key that
 * wraps new root keys (written by rotate); without it, the `key_id` of
 * the configuration is current.  A KEK id is derived from the server's
 * unique identifier, which each blob carries, so unwrapping needs no
 * local state at all.
 *
 * Not done here: Locate, Revoke and Destroy (keys are retired on the
 * server by its operator), connection pooling across processes, and
 * lockout: a client certificate cannot be guessed, so a rejected one is
 * audited and reported, not counted (docs/kms.md).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sodium.h>

#include "ks_int.h"
#include "kmip_ttlv.h"

#define KMIP_IV_BYTES KMIP_GCM_IV_BYTES
#define KMIP_TAG_BYTES KMIP_GCM_TAG_BYTES
#define KMIP_BLOB_FIXED (1U + KMIP_IV_BYTES + CF_KS_KEY_BYTES + KMIP_TAG_BYTES)
#define KMIP_TRIES 3		/* connection attempts */
#define KMIP_BACKOFF_MS 100	/* doubled after each failed attempt */
#define KMIP_TIMEOUT_DEFAULT 10	/* seconds per connect, send or receive */

struct kmip_priv {
	char host[256];
	char port[8];
	char ca[PATH_MAX], cert[PATH_MAX], key[PATH_MAX];
	char key_id[KMIP_UID_MAX + 1];	/* configured; "" if none */
	char cur[KMIP_UID_MAX + 1];	/* current key, "" until known */
	char dir[CF_KS_NAME_MAX + 8];	/* "kms/NAME", relative to home */
	int timeout_s;
	SSL_CTX *ctx;
	SSL *ssl;
	int fd;
	struct cf_secbuf *io;		/* request, then response bytes */
	struct kmip_msg msg;		/* the decoded response, into io */
};

/* ---- helpers ---------------------------------------------------------- */

static int
uid_valid(const unsigned char *s, size_t len)
{
	size_t i;

	if (len == 0 || len > KMIP_UID_MAX)
		return 0;
	for (i = 0; i < len; i++)
		if (s[i] < 0x21 || s[i] > 0x7e)
			return 0;
	return 1;
}

/* A configured path; relative paths are relative to the home. */
static int
conf_path(struct ks_kms *kms, const char *key, char *buf, size_t len)
{
	const char *v = ks_kms_conf(kms, key);
	int n;

	if (v == NULL || v[0] == '\0')
		return ks_err(-EINVAL, "[kms.%s]: type kmip needs '%s'",
		    kms->name, key);
	if (v[0] == '/')
		n = snprintf(buf, len, "%s", v);
	else
		n = snprintf(buf, len, "%s/%s", cf_ks_home_path(kms->home), v);
	if (n < 0 || (size_t)n >= len)
		return ks_err(-ENAMETOOLONG, "[kms.%s]: '%s' is too long",
		    kms->name, key);
	return 0;
}

static int
kmip_open(struct ks_kms *kms)
{
	struct kmip_priv *p;
	const char *v;
	char *end;
	long n;
	int rc;

	p = calloc(1, sizeof(*p));
	if (p == NULL)
		return -ENOMEM;
	p->fd = -1;
	p->timeout_s = KMIP_TIMEOUT_DEFAULT;
	snprintf(p->dir, sizeof(p->dir), "kms/%s", kms->name);
	v = ks_kms_conf(kms, "host");
	if (v == NULL || v[0] == '\0' || strlen(v) >= sizeof(p->host)) {
		rc = ks_err(-EINVAL, "[kms.%s]: type kmip needs 'host'",
		    kms->name);
		goto out;
	}
	snprintf(p->host, sizeof(p->host), "%s", v);
	v = ks_kms_conf(kms, "port");
	if (v == NULL)
		v = "5696";
	errno = 0;
	n = strtol(v, &end, 10);
	if (errno != 0 || end == v || *end != '\0' || n < 1 || n > 65535) {
		rc = ks_err(-EINVAL, "[kms.%s]: port must be 1..65535",
		    kms->name);
		goto out;
	}
	snprintf(p->port, sizeof(p->port), "%ld", n);
	v = ks_kms_conf(kms, "timeout");
	if (v != NULL) {
		errno = 0;
		n = strtol(v, &end, 10);
		if (errno != 0 || end == v || *end != '\0' || n < 1 ||
		    n > 300) {
			rc = ks_err(-EINVAL, "[kms.%s]: timeout must be 1..300 "
			    "seconds", kms->name);
			goto out;
		}
		p->timeout_s = (int)n;
	}
	v = ks_kms_conf(kms, "key_id");
	if (v != NULL && v[0] != '\0') {
		if (!uid_valid((const unsigned char *)v, strlen(v))) {
			rc = ks_err(-EINVAL, "[kms.%s]: key_id must be 1..%u "
			    "printable characters", kms->name, KMIP_UID_MAX);
			goto out;
		}
		snprintf(p->key_id, sizeof(p->key_id), "%s", v);
	}
	rc = conf_path(kms, "ca", p->ca, sizeof(p->ca));
	if (rc == 0)
		rc = conf_path(kms, "cert", p->cert, sizeof(p->cert));
	if (rc == 0)
		rc = conf_path(kms, "key", p->key, sizeof(p->key));
	if (rc < 0)
		goto out;
	rc = cf_secbuf_new(&p->io, KMIP_MSG_MAX);
	if (rc < 0)
		goto out;
	kms->priv = p;
	p = NULL;
	rc = 0;
out:
	free(p);
	return rc;
}

static void
disconnect(struct kmip_priv *p)
{
	struct sigaction ign, old;

	if (p->ssl != NULL) {
		/* close_notify to a peer that is gone must not SIGPIPE us. */
		memset(&ign, 0, sizeof(ign));
		ign.sa_handler = SIG_IGN;
		sigaction(SIGPIPE, &ign, &old);
		SSL_shutdown(p->ssl);
		sigaction(SIGPIPE, &old, NULL);
		SSL_free(p->ssl);
		p->ssl = NULL;
	}
	if (p->fd >= 0) {
		close(p->fd);
		p->fd = -1;
	}
}

static void
kmip_close(struct ks_kms *kms)
{
	struct kmip_priv *p = kms->priv;

	if (p == NULL)
		return;
	disconnect(p);
	SSL_CTX_free(p->ctx);
	cf_secbuf_free(p->io);
	sodium_memzero(&p->msg, sizeof(p->msg));
	free(p);
	kms->priv = NULL;
}

/* ---- TLS -------------------------------------------------------------- */

/* The last OpenSSL error as text, and the queue cleared. */
static const char *
ssl_reason(char *buf, size_t len)
{
	unsigned long e = ERR_peek_last_error();

	if (e == 0)
		snprintf(buf, len, "connection closed");
	else
		ERR_error_string_n(e, buf, len);
	ERR_clear_error();
	return buf;
}

/* 1 if the peer's alert says it refused our certificate. */
static int
peer_refused_cert(void)
{
	unsigned long e = ERR_peek_last_error();

	if (ERR_GET_LIB(e) != ERR_LIB_SSL)
		return 0;
	switch (ERR_GET_REASON(e)) {
	case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
	case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
	case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
	case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
	case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
	case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
	case SSL_R_TLSV1_ALERT_ACCESS_DENIED:
	case SSL_R_TLSV1_ALERT_DECRYPT_ERROR:
	case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
		return 1;
	default:
		return 0;
	}
}

static void
audit_auth_failure(struct ks_kms *kms, const char *why)
{
	struct kmip_priv *p = kms->priv;
	char where[300];
	struct cf_ks_audit_field f[] = {
		{ "kms", kms->name, 0 },
		{ "server", where, 0 },
		{ "reason", why, 0 },
	};

	snprintf(where, sizeof(where), "%s:%s", p->host, p->port);
	(void)!cf_ks_audit_append(kms->home, "kms.auth_failed", f, 3);
}

static int
make_ctx(struct ks_kms *kms)
{
	struct kmip_priv *p = kms->priv;
	struct stat st;
	char why[256];

	if (p->ctx != NULL)
		return 0;
	/* The private key must be ours alone, as the passphrase file is. */
	if (stat(p->key, &st) < 0)
		return ks_err(-errno, "KMS '%s': client key %s: %s", kms->name,
		    p->key, strerror(errno));
	if (!S_ISREG(st.st_mode) || (st.st_mode & 077) != 0)
		return ks_err(-EACCES, "KMS '%s': client key %s must be a "
		    "regular file readable by its owner only (chmod 600)",
		    kms->name, p->key);
	p->ctx = SSL_CTX_new(TLS_client_method());
	if (p->ctx == NULL)
		return -ENOMEM;
	SSL_CTX_set_min_proto_version(p->ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(p->ctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_mode(p->ctx, SSL_MODE_AUTO_RETRY |
	    SSL_MODE_RELEASE_BUFFERS);
	if (SSL_CTX_load_verify_locations(p->ctx, p->ca, NULL) != 1)
		goto fail_ca;
	if (SSL_CTX_use_certificate_chain_file(p->ctx, p->cert) != 1)
		goto fail_cert;
	if (SSL_CTX_use_PrivateKey_file(p->ctx, p->key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(p->ctx) != 1)
		goto fail_key;
	return 0;
fail_ca:
	ks_err(-EINVAL, "KMS '%s': cannot load CA %s: %s", kms->name, p->ca,
	    ssl_reason(why, sizeof(why)));
	goto fail;
fail_cert:
	ks_err(-EINVAL, "KMS '%s': cannot load client certificate %s: %s",
	    kms->name, p->cert, ssl_reason(why, sizeof(why)));
	goto fail;
fail_key:
	ks_err(-EINVAL, "KMS '%s': cannot load client key %s (or it does "
	    "not match the certificate): %s", kms->name, p->key,
	    ssl_reason(why, sizeof(why)));
fail:
	SSL_CTX_free(p->ctx);
	p->ctx = NULL;
	return -EINVAL;
}

/* One TCP connection attempt to any address of host, within the timeout. */
static int
tcp_connect(struct kmip_priv *p)
{
	struct addrinfo hints, *res = NULL, *ai;
	struct timeval tv;
	int fd = -1, rc, err = ECONNREFUSED;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	rc = getaddrinfo(p->host, p->port, &hints, &res);
	if (rc != 0)
		return -EHOSTUNREACH;
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		struct pollfd pfd;
		socklen_t elen = sizeof(err);

		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC |
		    SOCK_NONBLOCK, ai->ai_protocol);
		if (fd < 0) {
			err = errno;
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
			if (errno != EINPROGRESS) {
				err = errno;
				goto next;
			}
			pfd.fd = fd;
			pfd.events = POLLOUT;
			rc = poll(&pfd, 1, p->timeout_s * 1000);
			if (rc == 0) {
				err = ETIMEDOUT;
				goto next;
			}
			if (rc < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err,
			    &elen) < 0) {
				err = errno;
				goto next;
			}
			if (err != 0)
				goto next;
		}
		/* Blocking from here on, with timeouts on every read/write. */
		if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0) {
			err = errno;
			goto next;
		}
		tv.tv_sec = p->timeout_s;
		tv.tv_usec = 0;
		(void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		(void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		freeaddrinfo(res);
		return fd;
next:
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	return -err;
}

static void
sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static int
tls_connect(struct ks_kms *kms)
{
	struct kmip_priv *p = kms->priv;
	unsigned char ip[16];
	char why[256];
	long vr;
	int rc, attempt, fd = -1;
	long backoff = KMIP_BACKOFF_MS;

	if (p->ssl != NULL)
		return 0;
	rc = make_ctx(kms);
	if (rc < 0)
		return rc;
	for (attempt = 1; attempt <= KMIP_TRIES; attempt++) {
		fd = tcp_connect(p);
		if (fd >= 0)
			break;
		if (attempt < KMIP_TRIES) {
			sleep_ms(backoff);
			backoff *= 2;
		}
	}
	if (fd < 0)
		return ks_err(fd, "KMS '%s' (kmip): cannot connect to %s:%s: "
		    "%s (%d attempts)", kms->name, p->host, p->port,
		    strerror(-fd), KMIP_TRIES);
	p->fd = fd;
	p->ssl = SSL_new(p->ctx);
	if (p->ssl == NULL) {
		disconnect(p);
		return -ENOMEM;
	}
	if (inet_pton(AF_INET, p->host, ip) == 1 ||
	    inet_pton(AF_INET6, p->host, ip) == 1) {
		rc = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(p->ssl),
		    p->host);
	} else {
		rc = SSL_set1_host(p->ssl, p->host);
		if (rc == 1)
			rc = (int)SSL_set_tlsext_host_name(p->ssl, p->host);
	}
	if (rc != 1 || SSL_set_fd(p->ssl, p->fd) != 1) {
		disconnect(p);
		return ks_err(-EINVAL, "KMS '%s': cannot set up TLS for %s",
		    kms->name, p->host);
	}
	ERR_clear_error();
	errno = 0;
	if (SSL_connect(p->ssl) == 1)
		return 0;
	vr = SSL_get_verify_result(p->ssl);
	if (errno == EAGAIN || errno == EWOULDBLOCK) {
		rc = ks_err(-ETIMEDOUT, "KMS '%s' (kmip): %s:%s did not "
		    "complete the TLS handshake within %d s", kms->name,
		    p->host, p->port, p->timeout_s);
		ERR_clear_error();
	} else if (vr != X509_V_OK) {
		rc = ks_err(-EIO, "KMS '%s' (kmip): the server at %s:%s is "
		    "not trusted: %s (checked against ca %s)", kms->name,
		    p->host, p->port, X509_verify_cert_error_string(vr), p->ca);
		ERR_clear_error();
	} else if (peer_refused_cert()) {
		rc = ks_err(-EACCES, "KMS '%s' (kmip): the server at %s:%s "
		    "rejected the client certificate %s: %s", kms->name,
		    p->host, p->port, p->cert, ssl_reason(why, sizeof(why)));
		audit_auth_failure(kms, "client certificate rejected");
	} else {
		rc = ks_err(-EIO, "KMS '%s' (kmip): TLS handshake with %s:%s "
		    "failed: %s", kms->name, p->host, p->port,
		    ssl_reason(why, sizeof(why)));
	}
	disconnect(p);
	return rc;
}

/*
 * Sends len bytes and reads one whole response into p->io, decoding it
 * into p->msg.  A write to a peer that closed must not kill the process
 * with SIGPIPE, so it is ignored around SSL_write (as curl does).
 */
static int
exchange(struct ks_kms *kms, size_t len, size_t *rlen)
{
	struct kmip_priv *p = kms->priv;
	unsigned char *buf = cf_secbuf_data(p->io);
	struct sigaction ign, old;
	size_t total, got;
	char why[256];
	int n, rc;

	*rlen = 0;
	memset(&ign, 0, sizeof(ign));
	ign.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &ign, &old);
	ERR_clear_error();
	n = SSL_write(p->ssl, buf, (int)len);
	sigaction(SIGPIPE, &old, NULL);
	sodium_memzero(buf, len);
	if (n <= 0 || (size_t)n != len)
		goto io_fail;
	for (got = 0; got < 8; got += (size_t)n) {
		n = SSL_read(p->ssl, buf + got, (int)(8 - got));
		if (n <= 0)
			goto io_fail;
	}
	rc = kmip_frame_len(buf, &total);
	if (rc < 0)
		return ks_err(-EPROTO, "KMS '%s' (kmip): %s:%s sent a response "
		    "that is not a KMIP message or is over %u bytes", kms->name,
		    p->host, p->port, KMIP_MSG_MAX);
	for (; got < total; got += (size_t)n) {
		n = SSL_read(p->ssl, buf + got, (int)(total - got));
		if (n <= 0)
			goto io_fail;
	}
	*rlen = total;
	rc = kmip_decode(buf, total, &p->msg);
	if (rc < 0)
		return ks_err(-EPROTO, "KMS '%s' (kmip): malformed response "
		    "from %s:%s", kms->name, p->host, p->port);
	return 0;
io_fail:
	if (peer_refused_cert()) {
		rc = ks_err(-EACCES, "KMS '%s' (kmip): the server at %s:%s "
		    "rejected the client certificate %s: %s", kms->name,
		    p->host, p->port, p->cert, ssl_reason(why, sizeof(why)));
		audit_auth_failure(kms, "client certificate rejected");
		return rc;
	}
	if (errno == EAGAIN || errno == EWOULDBLOCK)
		return ks_err(-ETIMEDOUT, "KMS '%s' (kmip): %s:%s did not "
		    "answer within %d s", kms->name, p->host, p->port,
		    p->timeout_s);
	return ks_err(-EIO, "KMS '%s' (kmip): connection to %s:%s failed: "
	    "%s", kms->name, p->host, p->port, ssl_reason(why, sizeof(why)));
}

/* ---- messages --------------------------------------------------------- */

static const char *
op_name(uint32_t op)
{
	switch (op) {
	case KMIP_OP_CREATE:
		return "Create";
	case KMIP_OP_ACTIVATE:
		return "Activate";
	case KMIP_OP_ENCRYPT:
		return "Encrypt";
	default:
		return "Decrypt";
	}
}

/*
 * Sends the request in p->io (len bytes) and checks the result.  On
 * success the payload's item index is in *payload and the decoded
 * response stays in p->msg until the next call.  A cached connection
 * that turns out to be dead is replaced once for idempotent operations.
 */
static int
call(struct ks_kms *kms, uint32_t op, size_t len, int *payload)
{
	struct kmip_priv *p = kms->priv;
	struct kmip_result r;
	unsigned char *saved = NULL;
	size_t rlen = 0;
	int rc, fresh;

	*payload = -1;
	fresh = p->ssl == NULL;
	if (!fresh && op != KMIP_OP_CREATE) {
		/* Keep a copy in case the cached connection has gone. */
		saved = sodium_malloc(len);
		if (saved == NULL)
			return -ENOMEM;
		memcpy(saved, cf_secbuf_data(p->io), len);
	}
	rc = tls_connect(kms);
	if (rc < 0)
		goto out;
	rc = exchange(kms, len, &rlen);
	if (rc == -EIO && saved != NULL) {
		disconnect(p);
		memcpy(cf_secbuf_data(p->io), saved, len);
		rc = tls_connect(kms);
		if (rc == 0)
			rc = exchange(kms, len, &rlen);
	}
	if (rc < 0) {
		disconnect(p);
		goto out;
	}
	rc = kmip_result_get(&p->msg, op, &r);
	if (rc < 0) {
		rc = ks_err(-EPROTO, "KMS '%s' (kmip): %s:%s sent a malformed "
		    "%s response", kms->name, p->host, p->port, op_name(op));
		goto out;
	}
	if (r.status != KMIP_STATUS_SUCCESS) {
		switch (r.reason) {
		case KMIP_REASON_ITEM_NOT_FOUND:
			rc = -ENOENT;
			break;
		case KMIP_REASON_AUTH_NOT_SUCCESSFUL:
		case KMIP_REASON_PERMISSION_DENIED:
		case KMIP_REASON_WRONG_KEY_LIFECYCLE:
			rc = -EACCES;
			break;
		default:
			/*
			 * Any other refusal to decrypt is treated as an
			 * integrity failure: PyKMIP reports a wrong tag or
			 * AAD as a general failure.
			 */
			rc = op == KMIP_OP_DECRYPT ? -EBADMSG : -EIO;
			break;
		}
		if (rc == -EACCES)
			audit_auth_failure(kms, r.message);
		rc = ks_err(rc, "KMS '%s' (kmip, %s:%s): %s refused: status "
		    "%u, reason 0x%x: %s", kms->name, p->host, p->port,
		    op_name(op), r.status, r.reason, r.message[0] != '\0' ?
		    r.message : "(no message)");
		goto out;
	}
	*payload = r.payload;
	rc = 0;
out:
	if (saved != NULL) {
		sodium_memzero(saved, len);
		sodium_free(saved);
	}
	return rc;
}

/* Copies the Unique Identifier of a payload into uid. */
static int
payload_uid(struct ks_kms *kms, int payload, char uid[KMIP_UID_MAX + 1])
{
	struct kmip_priv *p = kms->priv;
	const unsigned char *s;
	size_t len;
	int idx;

	idx = kmip_child(&p->msg, payload, KMIP_TAG_UNIQUE_IDENTIFIER, -1);
	if (kmip_get_bytes(&p->msg, idx, KMIP_T_TEXT, &s, &len) < 0 ||
	    !uid_valid(s, len))
		return ks_err(-EPROTO, "KMS '%s' (kmip): the server's unique "
		    "identifier is missing or not 1..%u printable characters",
		    kms->name, KMIP_UID_MAX);
	memcpy(uid, s, len);
	uid[len] = '\0';
	return 0;
}

/* Create (AES-256, usage encrypt|decrypt) then Activate. */
static int
create_key(struct ks_kms *kms, char uid[KMIP_UID_MAX + 1])
{
	struct kmip_priv *p = kms->priv;
	char got[KMIP_UID_MAX + 1];
	size_t len;
	int rc, pl;

	rc = kmip_req_create(cf_secbuf_data(p->io), KMIP_MSG_MAX, &len);
	if (rc < 0)
		return rc;
	rc = call(kms, KMIP_OP_CREATE, len, &pl);
	if (rc < 0)
		return rc;
	rc = payload_uid(kms, pl, uid);
	if (rc < 0)
		return rc;
	rc = kmip_req_activate(cf_secbuf_data(p->io), KMIP_MSG_MAX, uid,
	    &len);
	if (rc < 0)
		return rc;
	rc = call(kms, KMIP_OP_ACTIVATE, len, &pl);
	if (rc < 0) {
		char why[512];

		snprintf(why, sizeof(why), "%s", cf_ks_last_error());
		return ks_err(rc, "KMS '%s' (kmip): created key '%s' but could "
		    "not activate it: %s", kms->name, uid, why);
	}
	rc = payload_uid(kms, pl, got);
	if (rc < 0)
		return rc;
	if (strcmp(got, uid) != 0)
		return ks_err(-EPROTO, "KMS '%s' (kmip): Activate answered "
		    "for another key", kms->name);
	return 0;
}

/* ---- state ------------------------------------------------------------ */

/* Reads kms/NAME/current; -ENOENT if rotate never ran. */
static int
read_state(struct ks_kms *kms, char uid[KMIP_UID_MAX + 1])
{
	struct kmip_priv *p = kms->priv;
	char path[PATH_MAX];
	unsigned char *buf = NULL;
	size_t len;
	int rc;

	snprintf(path, sizeof(path), "%s/current", p->dir);
	rc = ks_read_file(kms->home->dirfd, path, KMIP_UID_MAX + 2, &buf,
	    &len);
	if (rc < 0)
		return rc == -EFBIG ? ks_err(-EPROTO, "KMS '%s': %s is "
		    "damaged", kms->name, path) : rc;
	if (len > 0 && buf[len - 1] == '\n')
		len--;
	if (!uid_valid(buf, len)) {
		free(buf);
		return ks_err(-EPROTO, "KMS '%s': %s is damaged", kms->name,
		    path);
	}
	memcpy(uid, buf, len);
	uid[len] = '\0';
	free(buf);
	return 0;
}

static int
write_state(struct ks_kms *kms, const char *uid)
{
	struct kmip_priv *p = kms->priv;
	char path[PATH_MAX], line[KMIP_UID_MAX + 2];
	int rc;

	rc = ks_mkdirs(kms->home->dirfd, p->dir, 0700);
	if (rc < 0)
		return ks_err(rc, "cannot create %s: %s", p->dir,
		    strerror(-rc));
	snprintf(path, sizeof(path), "%s/current", p->dir);
	snprintf(line, sizeof(line), "%s\n", uid);
	rc = ks_write_file_atomic(kms->home->dirfd, path, line, strlen(line),
	    0600);
	if (rc < 0)
		return ks_err(rc, "cannot write %s: %s", path, strerror(-rc));
	return 0;
}

/* Creates a key on the server, makes it current, audits it. */
static int
new_current(struct ks_kms *kms)
{
	struct kmip_priv *p = kms->priv;
	unsigned char id[CF_KS_ID_BYTES];
	char uid[KMIP_UID_MAX + 1], hex[CF_KS_ID_BYTES * 2 + 1];
	int rc;

	rc = create_key(kms, uid);
	if (rc < 0)
		return rc;
	rc = write_state(kms, uid);
	if (rc < 0)
		return rc;
	snprintf(p->cur, sizeof(p->cur), "%s", uid);
	kmip_kek_id(id, uid);
	ks_hex(hex, id, CF_KS_ID_BYTES);
	{
		struct cf_ks_audit_field f[] = {
			{ "kms", kms->name, 0 },
			{ "kek", hex, 0 },
			{ "kmip_uid", uid, 0 },
		};

		return cf_ks_audit_append(kms->home, "kms.kek_created", f, 3);
	}
}

/* ---- ops -------------------------------------------------------------- */

static int
kmip_current(struct ks_kms *kms, unsigned char kek_id[CF_KS_ID_BYTES],
    uint8_t *alg)
{
	struct kmip_priv *p = kms->priv;
	int rc;

	*alg = CF_KS_WRAP_AES256GCM;
	if (p->cur[0] == '\0') {
		rc = read_state(kms, p->cur);
		if (rc == -ENOENT && p->key_id[0] != '\0') {
			snprintf(p->cur, sizeof(p->cur), "%s", p->key_id);
		} else if (rc == -ENOENT) {
			/* No key configured: make the first one. */
			rc = new_current(kms);
			if (rc < 0)
				return rc;
		} else if (rc < 0) {
			return rc;
		}
	}
	kmip_kek_id(kek_id, p->cur);
	return 0;
}

static int
kmip_wrap(struct ks_kms *kms, const unsigned char *kek_id, uint8_t alg,
    const unsigned char *aad, size_t aadlen, const struct cf_secbuf *key,
    unsigned char *blob, size_t *bloblen)
{
	struct kmip_priv *p = kms->priv;
	unsigned char id[CF_KS_ID_BYTES], iv[KMIP_IV_BYTES];
	const unsigned char *ct, *tag, *riv;
	size_t len, ctlen, taglen, ivlen, ulen;
	int rc, pl, idx;

	*bloblen = 0;
	if (alg != CF_KS_WRAP_AES256GCM || p->cur[0] == '\0' ||
	    cf_secbuf_len(key) != CF_KS_KEY_BYTES)
		cf_misuse("kmip_wrap: not the KEK named by kmip_current");
	kmip_kek_id(id, p->cur);
	if (sodium_memcmp(id, kek_id, CF_KS_ID_BYTES) != 0)
		cf_misuse("kmip_wrap: not the KEK named by kmip_current");
	randombytes_buf(iv, sizeof(iv));
	rc = kmip_req_encrypt(cf_secbuf_data(p->io), KMIP_MSG_MAX, p->cur,
	    cf_secbuf_cdata(key), iv, aad, aadlen, &len);
	if (rc < 0)
		goto out;
	rc = call(kms, KMIP_OP_ENCRYPT, len, &pl);
	if (rc < 0)
		goto out;
	rc = -EPROTO;
	idx = kmip_child(&p->msg, pl, KMIP_TAG_DATA, -1);
	if (kmip_get_bytes(&p->msg, idx, KMIP_T_BYTES, &ct, &ctlen) < 0 ||
	    ctlen != CF_KS_KEY_BYTES)
		goto bad;
	idx = kmip_child(&p->msg, pl, KMIP_TAG_AUTH_TAG, -1);
	if (kmip_get_bytes(&p->msg, idx, KMIP_T_BYTES, &tag, &taglen) < 0 ||
	    taglen != KMIP_TAG_BYTES)
		goto bad;
	/* A server that answers with an IV must answer with ours. */
	idx = kmip_child(&p->msg, pl, KMIP_TAG_IV_COUNTER_NONCE, -1);
	if (idx >= 0 && (kmip_get_bytes(&p->msg, idx, KMIP_T_BYTES, &riv,
	    &ivlen) < 0 || ivlen != sizeof(iv) || sodium_memcmp(riv, iv,
	    sizeof(iv)) != 0))
		goto bad;
	ulen = strlen(p->cur);
	blob[0] = (unsigned char)ulen;
	memcpy(blob + 1, p->cur, ulen);
	memcpy(blob + 1 + ulen, iv, sizeof(iv));
	memcpy(blob + 1 + ulen + sizeof(iv), ct, ctlen);
	memcpy(blob + 1 + ulen + sizeof(iv) + ctlen, tag, taglen);
	*bloblen = KMIP_BLOB_FIXED + ulen;
	rc = 0;
	goto out;
bad:
	rc = ks_err(-EPROTO, "KMS '%s' (kmip): Encrypt response from %s:%s "
	    "lacks a 32-byte ciphertext, a 16-byte tag or our IV", kms->name,
	    p->host, p->port);
out:
	sodium_memzero(cf_secbuf_data(p->io), KMIP_MSG_MAX);
	return rc;
}

static int
kmip_unwrap(struct ks_kms *kms, const unsigned char *kek_id, uint8_t alg,
    const unsigned char *aad, size_t aadlen, const unsigned char *blob,
    size_t bloblen, struct cf_secbuf **key)
{
	struct kmip_priv *p = kms->priv;
	unsigned char id[CF_KS_ID_BYTES];
	char uid[KMIP_UID_MAX + 1];
	const unsigned char *pt, *body;
	struct cf_secbuf *k = NULL;
	size_t ulen, len, ptlen;
	int rc, pl, idx;

	*key = NULL;
	ulen = bloblen > 0 ? blob[0] : 0;
	if (alg != CF_KS_WRAP_AES256GCM || bloblen < KMIP_BLOB_FIXED + 1 ||
	    bloblen != KMIP_BLOB_FIXED + ulen || !uid_valid(blob + 1, ulen))
		return ks_err(-EPROTO, "KMS '%s': wrapped key has algorithm "
		    "%u / %zu bytes, not what the kmip KMS writes", kms->name,
		    alg, bloblen);
	memcpy(uid, blob + 1, ulen);
	uid[ulen] = '\0';
	kmip_kek_id(id, uid);
	if (sodium_memcmp(id, kek_id, CF_KS_ID_BYTES) != 0)
		return ks_err(-EBADMSG, "wrapped key does not authenticate "
		    "under KMS '%s': its blob names KMIP key '%s' but its header "
		    "another KEK (altered)", kms->name, uid);
	body = blob + 1 + ulen;
	rc = kmip_req_decrypt(cf_secbuf_data(p->io), KMIP_MSG_MAX, uid,
	    body + KMIP_IV_BYTES, body, aad, aadlen,
	    body + KMIP_IV_BYTES + CF_KS_KEY_BYTES, &len);
	if (rc < 0)
		goto out;
	rc = call(kms, KMIP_OP_DECRYPT, len, &pl);
	if (rc == -EBADMSG) {
		char why[512];

		snprintf(why, sizeof(why), "%s", cf_ks_last_error());
		rc = ks_err(-EBADMSG, "wrapped key does not authenticate under "
		    "KMS '%s' (altered, or bound to another tenant or "
		    "version): %s", kms->name, why);
		goto out;
	}
	if (rc == -ENOENT) {
		rc = ks_err(-ENOENT, "KMS '%s' (kmip): key '%s' does not exist "
		    "on %s:%s (destroyed?)", kms->name, uid, p->host, p->port);
		goto out;
	}
	if (rc < 0)
		goto out;
	idx = kmip_child(&p->msg, pl, KMIP_TAG_DATA, -1);
	if (kmip_get_bytes(&p->msg, idx, KMIP_T_BYTES, &pt, &ptlen) < 0 ||
	    ptlen != CF_KS_KEY_BYTES) {
		rc = ks_err(-EPROTO, "KMS '%s' (kmip): Decrypt response from "
		    "%s:%s lacks a 32-byte plaintext", kms->name, p->host,
		    p->port);
		goto out;
	}
	rc = cf_secbuf_new(&k, CF_KS_KEY_BYTES);
	if (rc < 0)
		goto out;
	memcpy(cf_secbuf_data(k), pt, CF_KS_KEY_BYTES);
	*key = k;
	rc = 0;
out:
	sodium_memzero(cf_secbuf_data(p->io), KMIP_MSG_MAX);
	sodium_memzero(&p->msg, sizeof(p->msg));
	return rc;
}

static int
kmip_rotate(struct ks_kms *kms)
{
	return new_current(kms);
}

static int
kmip_describe(struct ks_kms *kms, const unsigned char *kek_id, char *buf,
    size_t len)
{
	struct kmip_priv *p = kms->priv;
	char hex[CF_KS_ID_BYTES * 2 + 1];

	ks_hex(hex, kek_id, CF_KS_ID_BYTES);
	snprintf(buf, len, "kmip KMS '%s' (%s:%s), KEK %s", kms->name,
	    p->host, p->port, hex);
	return 0;
}

static int
kmip_destroy(struct ks_kms *kms, const unsigned char *kek_id)
{
	return ks_err(-ENOTSUP, "KMS '%s' (kmip): coffer does not destroy "
	    "server keys; revoke and destroy them on the KMIP server",
	    kms->name);
}

const struct ks_kms_ops ks_kms_kmip_ops = {
	.type = "kmip",
	.open = kmip_open,
	.current = kmip_current,
	.wrap = kmip_wrap,
	.unwrap = kmip_unwrap,
	.rotate = kmip_rotate,
	.describe = kmip_describe,
	.destroy = kmip_destroy,
	.close = kmip_close,
};
