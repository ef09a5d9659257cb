/*
 * test_fs_ctl.c - the client side of a mounted store's control socket
 * for keys lent to a backup (docs/format/ctl.md [CTL-8]): the published
 * ROOTKEYS replies (tests/vectors/ctl-v1.json) parsed byte by byte and
 * served over a real Unix socket to cf_fs_ctl_borrow, which must lend
 * exactly the vector's keys to the tenant or nothing; an ERR line longer
 * than the client's buffer read to its end so the SNAPSHOT reply after it
 * still parses; and a daemon of another user never asked.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "cf_test.h"
#include "cf_fs.h"
#include "fs_int.h"

#define PASS "ctl test passphrase"

/* A fake daemon: answers each request with the next reply, then closes. */
struct server {
	int lfd;
	const unsigned char *reply[2];
	size_t len[2];
	char got[2][64];	/* the requests it read */
};

static void *
serve_main(void *arg)
{
	struct server *sv = arg;
	ssize_t n;
	int c, i;

	c = accept(sv->lfd, NULL, NULL);
	if (c < 0)
		return NULL;
	for (i = 0; i < 2 && sv->reply[i] != NULL; i++) {
		n = read(c, sv->got[i], sizeof(sv->got[i]) - 1);
		if (n <= 0)
			break;
		sv->got[i][n] = '\0';
		(void)!write(c, sv->reply[i], sv->len[i]);
	}
	close(c);
	return NULL;
}

/* Listens on DIR/cf.ctl, where cf_fs_ctl_open looks. */
static int
listen_at(const char *dir)
{
	struct sockaddr_un sa;
	int fd;

	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/cf.ctl", dir);
	unlink(sa.sun_path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
	    listen(fd, 1) != 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

/* A tenant with live versions 1 and 2, as the vectors assume. */
static struct cf_ks_tenant *
tenant_1_2(struct cf_ks_home **hp)
{
	struct cf_ks_home *h = NULL;
	struct cf_ks_tenant *t = NULL;
	uint32_t v = 0;

	*hp = NULL;
	if (cf_ks_home_open(&h, cf_test_home(PASS), CF_KS_HOME_CREATE) != 0)
		return NULL;
	if (cf_ks_tenant_create(h, "acme", CF_KS_CIPHER_NONE, NULL, NULL,
	    &t) != 0 || cf_ks_tenant_rotate_key(t, &v) != 0 || v != 2) {
		cf_ks_tenant_free(t);
		cf_ks_home_free(h);
		return NULL;
	}
	*hp = h;
	return t;
}

static void
vectors(void)
{
	json_error_t je;
	json_t *doc = json_load_file(cf_test_vector_path("ctl-v1.json"), 0,
	    &je), *reps, *r;
	uint32_t live[2] = { 1, 2 };
	size_t i, k, len, nl, n;
	unsigned char *b;
	int checked = 0;

	CHECK(doc != NULL);
	CHECK(json_integer_value(json_object_get(doc, "record_bytes")) ==
	    FS_CTL_KEY_REC);
	reps = json_object_get(doc, "replies");
	CHECK(json_array_size(reps) >= 10);
	json_array_foreach(reps, i, r) {
		const char *res = json_string_value(json_object_get(r,
		    "result"));
		json_t *vs = json_object_get(r, "versions");
		int rc;

		b = cf_test_unhex(json_string_value(json_object_get(r, "hex")),
		    &len);
		CHECK(b != NULL && res != NULL);
		/* The first line: to the newline, at most 16 bytes. */
		for (nl = 0; nl < len && nl < 16 && b[nl] != '\n'; nl++)
			;
		nl = nl < len && nl < 16 ? nl + 1 : nl;
		rc = fs_ctl_keys_head((const char *)b, nl, &n);
		if (strcmp(res, "refused") == 0) {
			CHECK_RC(rc, -EACCES);
		} else if (strcmp(res, "ok") == 0) {
			CHECK_RC(rc, 0);
			CHECK(n == json_array_size(vs));
			CHECK(len == nl + n * FS_CTL_KEY_REC);
			CHECK_RC(fs_ctl_keys_check(b + nl, n, live, 2), 0);
			for (k = 0; k < n; k++)
				CHECK(fs_ctl_le32(b + nl + k * FS_CTL_KEY_REC) ==
				    json_integer_value(json_array_get(vs, k)));
		} else {
			CHECK(strcmp(res, "malformed") == 0);
			/* The line, the records' versions, or too few bytes. */
			CHECK(rc == -EPROTO || len < nl + n * FS_CTL_KEY_REC ||
			    fs_ctl_keys_check(b + nl, n, live, 2) == -EPROTO);
		}
		free(b);
		checked++;
	}
	CHECK(checked == (int)json_array_size(reps));
	json_decref(doc);
}

/* Every vector reply, from a daemon over a socket, to cf_fs_ctl_borrow. */
static void
borrow_vectors(void)
{
	struct cf_ks_home *h;
	struct cf_ks_tenant *t = tenant_1_2(&h);
	json_error_t je;
	json_t *doc = json_load_file(cf_test_vector_path("ctl-v1.json"), 0,
	    &je), *r;
	const char *dir = cf_test_tmpdir();
	size_t i, k, len;

	CHECK(t != NULL && doc != NULL);
	json_array_foreach(json_object_get(doc, "replies"), i, r) {
		const char *res = json_string_value(json_object_get(r,
		    "result"));
		json_t *vs = json_object_get(r, "versions");
		struct cf_ks_tenant *u = NULL;
		struct cf_fs_snapshot *c = NULL;
		struct server sv;
		struct cf_secbuf *key = NULL;
		pthread_t th;
		unsigned char *b;
		int rc, want;

		b = cf_test_unhex(json_string_value(json_object_get(r, "hex")),
		    &len);
		CHECK(b != NULL);
		memset(&sv, 0, sizeof(sv));
		sv.lfd = listen_at(dir);
		CHECK(sv.lfd >= 0);
		sv.reply[0] = b;
		sv.len[0] = len;
		CHECK_RC(pthread_create(&th, NULL, serve_main, &sv), 0);
		CHECK_RC(cf_ks_tenant_open(h, "acme", &u), 0);
		CHECK_RC(cf_fs_ctl_open(dir, &c), 0);
		rc = cf_fs_ctl_borrow(c, u);
		cf_fs_ctl_close(c);
		pthread_join(th, NULL);
		close(sv.lfd);
		CHECK(strcmp(sv.got[0], "ROOTKEYS\n") == 0);
		want = strcmp(res, "ok") == 0 ? 0 :
		    strcmp(res, "refused") == 0 ? -EACCES : -EPROTO;
		if (rc != want)
			fprintf(stderr, "# vector %s\n", json_string_value(
			    json_object_get(r, "name")));
		CHECK_RC(rc, want);
		CHECK(cf_ks_tenant_lent(u) == (rc == 0 ? json_array_size(vs) :
		    0));
		/* Each lent key is what unlock now gives, byte for byte. */
		for (k = 0; rc == 0 && k < json_array_size(vs); k++) {
			uint32_t v = (uint32_t)json_integer_value(
			    json_array_get(vs, k));

			CHECK_RC(cf_ks_tenant_unlock(u, v, &key), 0);
			CHECK(memcmp(cf_secbuf_cdata(key), b + 5 + k *
			    FS_CTL_KEY_REC + 4, CF_KS_KEY_BYTES) == 0);
			cf_secbuf_free(key);
		}
		cf_ks_tenant_free(u);
		free(b);
	}
	json_decref(doc);
	cf_ks_tenant_free(t);
	cf_ks_home_free(h);
}

/* A long ERR line is read to its end: the SNAPSHOT reply after it parses. */
static void
err_then_snapshot(void)
{
	struct cf_ks_home *h;
	struct cf_ks_tenant *t = tenant_1_2(&h);
	struct cf_fs_snapshot *c = NULL;
	const char *dir = cf_test_tmpdir();
	static char err[400];
	static const char snap[] = "OK /srv/s/snap/00000000000000aa 77 gen\n";
	struct server sv;
	pthread_t th;
	uint64_t pause = 0;
	char *farm = NULL;

	CHECK(t != NULL);
	memset(err, 'x', sizeof(err));
	memcpy(err, "ERR ", 4);
	err[sizeof(err) - 1] = '\n';
	memset(&sv, 0, sizeof(sv));
	sv.lfd = listen_at(dir);
	CHECK(sv.lfd >= 0);
	sv.reply[0] = (const unsigned char *)err;
	sv.len[0] = sizeof(err);
	sv.reply[1] = (const unsigned char *)snap;
	sv.len[1] = sizeof(snap) - 1;
	CHECK_RC(pthread_create(&th, NULL, serve_main, &sv), 0);
	CHECK_RC(cf_fs_ctl_open(dir, &c), 0);
	CHECK_RC(cf_fs_ctl_borrow(c, t), -EACCES);
	CHECK(cf_ks_tenant_lent(t) == 0);
	CHECK_RC(cf_fs_snapshot_take_on(c, &farm, &pause), 0);
	pthread_join(th, NULL);
	close(sv.lfd);
	CHECK(strcmp(sv.got[1], "SNAPSHOT\n") == 0);
	CHECK(farm != NULL && strcmp(farm, "/srv/s/snap/00000000000000aa") ==
	    0);
	CHECK(pause == 77 && cf_fs_snapshot_gens(c));
	free(farm);
	cf_fs_ctl_close(c);
	cf_ks_tenant_free(t);
	cf_ks_home_free(h);
}

/*
 * A socket whose listener is neither root nor us is not asked for keys:
 * the listener runs as nobody (needs root to set up; skipped otherwise)
 * and reports what it read.
 */
static void
other_user_not_asked(void)
{
	struct cf_ks_home *h;
	struct cf_ks_tenant *t = tenant_1_2(&h);
	struct cf_fs_snapshot *c = NULL;
	const char *dir = cf_test_tmpdir();
	struct sockaddr_un sa;
	int p[2], lfd, cfd, st;
	char buf[64] = "";
	ssize_t n;
	pid_t pid;

	CHECK(t != NULL);
	if (geteuid() != 0) {
		printf("# skipped: needs root to run a listener as nobody\n");
		cf_ks_tenant_free(t);
		cf_ks_home_free(h);
		return;
	}
	CHECK_RC(pipe(p), 0);
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/cf.ctl", dir);
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		/* Bound as root, listening as nobody: the credentials a
		 * client sees are the listener's at listen(). */
		lfd = socket(AF_UNIX, SOCK_STREAM, 0);
		if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa,
		    sizeof(sa)) != 0 || setresgid(65534, 65534, 65534) != 0 ||
		    setresuid(65534, 65534, 65534) != 0 || listen(lfd, 1) != 0)
			_exit(2);
		(void)!write(p[1], "L", 1);
		cfd = accept(lfd, NULL, NULL);
		n = cfd < 0 ? -1 : read(cfd, buf, sizeof(buf) - 1);
		(void)!write(p[1], n > 0 ? buf : "(nothing)", n > 0 ?
		    (size_t)n : 9);
		_exit(0);
	}
	close(p[1]);
	CHECK(read(p[0], buf, 1) == 1 && buf[0] == 'L');
	CHECK_RC(cf_fs_ctl_open(dir, &c), 0);
	CHECK_RC(cf_fs_ctl_borrow(c, t), -EPERM);
	cf_fs_ctl_close(c);
	n = read(p[0], buf, sizeof(buf) - 1);
	buf[n > 0 ? n : 0] = '\0';
	CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) &&
	    WEXITSTATUS(st) == 0);
	CHECK(strcmp(buf, "(nothing)") == 0);
	CHECK(cf_ks_tenant_lent(t) == 0);
	close(p[0]);
	cf_ks_tenant_free(t);
	cf_ks_home_free(h);
}

static const struct cf_test_case cases[] = {
	CF_TEST(vectors),
	CF_TEST(borrow_vectors),
	CF_TEST(err_then_snapshot),
	CF_TEST(other_user_not_asked),
};

CF_TEST_MAIN(cases)
