/*
 * tl_util.c - what every coffer subcommand needs: opening the home,
 * printing errors and JSON, and asking for a passphrase on the terminal
 * with echo off (never through argv or an environment value).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <termios.h>
#include <unistd.h>

#include <sodium.h>

#include "cf_backup.h"
#include "tl_int.h"
#ifdef CF_HAVE_FS
#include "cf_fs.h"
#endif

struct cf_ks_home *
tl_home(struct tl_ctx *ctx, int create)
{
	int rc;

	if (ctx->home != NULL)
		return ctx->home;
	rc = cf_ks_home_open(&ctx->home, ctx->home_path,
	    create ? CF_KS_HOME_CREATE : 0);
	if (rc < 0) {
		if (rc == -ENOENT && !create)
			fprintf(stderr, "coffer: no coffer home at %s (create "
			    "a tenant first, or set --home / COFFER_HOME)\n",
			    ctx->home_path);
		else
			fprintf(stderr, "coffer: %s\n", cf_ks_last_error());
		exit(cf_ks_exit_code(rc));
	}
	cf_ks_home_set_passphrase_cb(ctx->home, tl_prompt_passphrase, NULL);
	return ctx->home;
}

int
tl_fail(int rc, const char *what)
{
	if (what != NULL)
		fprintf(stderr, "coffer: %s: %s\n", what, cf_ks_last_error());
	else
		fprintf(stderr, "coffer: %s\n", cf_ks_last_error());
	return cf_ks_exit_code(rc);
}

int
tl_usage(const struct tl_cmd *cmd, const char *fmt, ...)
{
	va_list ap;

	fputs("coffer: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nusage:\n%s", cmd->usage);
	return CF_EXIT_USAGE;
}

void
tl_print_json(json_t *j)
{
	json_dumpf(j, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	fputc('\n', stdout);
	json_decref(j);
}

static int
read_line(int fd, const char *prompt, char *buf, size_t cap, size_t *len)
{
	size_t n = 0;
	ssize_t r;
	char c;

	if (write(fd, prompt, strlen(prompt)) < 0)
		return -errno;
	for (;;) {
		r = read(fd, &c, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0 || c == '\n')
			break;
		if (n + 1 >= cap)
			return -EMSGSIZE;
		buf[n++] = c;
	}
	buf[n] = '\0';
	*len = n;
	(void)!write(fd, "\n", 1);
	return 0;
}

/*
 * While echo is off, SIGINT and SIGTERM first put the terminal back:
 * otherwise Ctrl-C at the prompt leaves the user's shell without echo.
 * The handler then restores the previous disposition and re-raises, so
 * the process dies (or not) exactly as it would have.  Only
 * async-signal-safe calls: tcsetattr, sigaction, raise.
 */
static const int prompt_sigs[] = { SIGINT, SIGTERM };
static struct sigaction prompt_oldact[2];
static struct termios prompt_saved;
static volatile sig_atomic_t prompt_fd = -1;

static void
prompt_on_signal(int sig)
{
	size_t i;

	if (prompt_fd >= 0)
		(void)tcsetattr(prompt_fd, TCSANOW, &prompt_saved);
	for (i = 0; i < sizeof(prompt_sigs) / sizeof(prompt_sigs[0]); i++)
		if (prompt_sigs[i] == sig)
			(void)sigaction(sig, &prompt_oldact[i], NULL);
	(void)raise(sig);
}

static void
prompt_signals(int on)
{
	struct sigaction sa;
	size_t i;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = prompt_on_signal;
	sigemptyset(&sa.sa_mask);
	for (i = 0; i < sizeof(prompt_sigs) / sizeof(prompt_sigs[0]); i++) {
		if (on) {
			(void)sigaction(prompt_sigs[i], NULL,
			    &prompt_oldact[i]);
			/* An ignored signal stays ignored. */
			if (prompt_oldact[i].sa_handler != SIG_IGN)
				(void)sigaction(prompt_sigs[i], &sa, NULL);
		} else
			(void)sigaction(prompt_sigs[i], &prompt_oldact[i],
			    NULL);
	}
}

int
tl_prompt_passphrase(void *arg, const char *kms_name, int confirm, char *buf,
    size_t cap, size_t *len)
{
	struct termios old, quiet, now;
	char prompt[160], *again = NULL;
	size_t len2 = 0;
	int fd, rc;

	(void)arg;
	*len = 0;
	fd = open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -EACCES;
	if (tcgetattr(fd, &old) != 0) {
		close(fd);
		return -EACCES;
	}
	quiet = old;
	quiet.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
	quiet.c_lflag |= ICANON;
	prompt_saved = old;
	prompt_fd = fd;
	prompt_signals(1);
	/*
	 * tcsetattr succeeds if any change took effect: read back to be
	 * sure echo is off before a passphrase is typed.
	 */
	if (tcsetattr(fd, TCSAFLUSH, &quiet) != 0 || tcgetattr(fd, &now) != 0 ||
	    (now.c_lflag & ECHO) != 0) {
		fprintf(stderr, "coffer: cannot turn off echo on /dev/tty; "
		    "not asking for a passphrase\n");
		rc = -EIO;
		goto out;
	}
	snprintf(prompt, sizeof(prompt), "%s passphrase for KMS '%s': ",
	    confirm ? "New" : "Enter", kms_name);
	rc = read_line(fd, prompt, buf, cap, len);
	if (rc == 0 && confirm) {
		again = sodium_malloc(cap);
		if (again == NULL) {
			rc = -ENOMEM;
		} else {
			rc = read_line(fd, "Repeat passphrase: ", again, cap,
			    &len2);
			if (rc == 0 && (len2 != *len ||
			    sodium_memcmp(again, buf, *len) != 0)) {
				rc = -EINVAL;
				fprintf(stderr, "coffer: passphrases do not "
				    "match\n");
			}
			sodium_free(again);
		}
	}
out:
	if (tcsetattr(fd, TCSAFLUSH, &old) != 0)
		fprintf(stderr, "coffer: cannot restore the terminal (%s); "
		    "run 'stty echo'\n", strerror(errno));
	prompt_signals(0);
	prompt_fd = -1;
	close(fd);
	if (rc < 0) {
		sodium_memzero(buf, cap);
		*len = 0;
	}
	return rc;
}

/*
 * 1 if a coffer daemon serves the tenant's store of this home: the
 * store's control socket (docs/format/ctl.md) accepts a connection.  A
 * mount table entry "coffer:NAME" is not enough: another home on the
 * same machine may have a tenant of that name mounted.  -ENAMETOOLONG
 * if the socket's path does not fit a sockaddr_un, -ENOSYS in a build
 * without the store (callers then fall back to the mount table).
 */
int
tl_store_served(struct cf_ks_home *home, const struct cf_ks_tenant *t)
{
#ifdef CF_HAVE_FS
	const char *store = cf_ks_tenant_get(t, "store");	/* elsewhere */
	char path[PATH_MAX];

	if (store == NULL) {
		snprintf(path, sizeof(path), "%s/%s/store",
		    cf_ks_home_path(home), cf_ks_tenant_dir(t));
		store = path;
	}
	return cf_fs_store_served(store);
#else
	(void)home;
	(void)t;
	return -ENOSYS;		/* built without the store: no mounts */
#endif
}

int
tl_repo_unlock(struct cf_ks_tenant *t, const char *url,
    struct cf_secbuf **root, uint32_t *version)
{
	uint32_t v = 0;
	int rc;

	*root = NULL;
	*version = 0;
	/*
	 * A repository keeps the root key version it was created with
	 * (docs/kms.md, Root key rotation): open it with that one.  One
	 * that cannot be read here is left to the open that follows to
	 * report.
	 */
	if (cf_bk_repo_key_version(url, &v) < 0 ||
	    v > cf_ks_tenant_key_version(t))
		v = cf_ks_tenant_key_version(t);
	rc = cf_ks_tenant_unlock(t, v, root);
	if (rc == 0)
		*version = v;
	return rc;
}

int
tl_repo_open(struct cf_ks_tenant *t, struct cf_bk_repo **out,
    const char *url, const struct cf_secbuf *root, uint32_t version,
    int flags)
{
	struct cf_bk_keys *keys = NULL;
	struct cf_secbuf *other = NULL;
	uint32_t v[CF_BK_KEYS_MAX + 1];
	size_t n, i;
	int rc;

	*out = NULL;
	rc = cf_bk_keys_new(&keys, root, version, cf_ks_tenant_cipher(t));
	if (rc < 0)
		return rc;
	/* Objects of every live version open; new ones use the newest. */
	n = cf_ks_tenant_versions(t, v, CF_BK_KEYS_MAX + 1);
	for (i = 0; i < n && i < CF_BK_KEYS_MAX; i++) {
		if (v[i] == version)
			continue;
		rc = cf_ks_tenant_unlock(t, v[i], &other);
		if (rc == 0)
			rc = cf_bk_keys_add(keys, other, v[i]);
		cf_secbuf_free(other);
		other = NULL;
		if (rc < 0) {
			cf_bk_keys_free(keys);
			return rc;
		}
	}
	return cf_bk_repo_open_url_keys(out, url, keys, cf_ks_tenant_id(t),
	    flags);
}

void
tl_repo_url(struct cf_ks_home *home, const struct cf_ks_tenant *t,
    const char *opt, char *out, size_t cap)
{
	const char *stored = cf_ks_tenant_get(t, "repo");

	if (opt != NULL)
		snprintf(out, cap, "%s", opt);
	else if (stored != NULL && stored[0] != '\0')
		snprintf(out, cap, "%s", stored);
	else
		snprintf(out, cap, "file://%s/repos/%s", cf_ks_home_path(home),
		    cf_ks_tenant_name(t));
}
