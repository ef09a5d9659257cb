/*
 * tl_util.c - what every coffer subcommand needs: opening the home,
 * printing errors and JSON, and asking for a passphrase on the terminal
 * with echo off (never through argv or an environment value), the
 * progress line, and walking or removing a tree of any depth through
 * directory descriptors.
 */
#include <dirent.h>
#include <errno.h>
#include <malloc.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
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

struct cf_bk_prefetch *
tl_repo_prefetch(const char *url, int flags, unsigned conns,
    uint64_t pack_budget)
{
	struct cf_bk_prefetch *pf = NULL;

	/* Without a thread the open reads everything itself, as before. */
	if (cf_bk_prefetch_start(&pf, url, flags, conns, pack_budget) < 0)
		return NULL;
	return pf;
}

int
tl_repo_unlock(struct cf_ks_tenant *t, const char *url,
    struct cf_secbuf **root, uint32_t *version)
{
	return tl_repo_unlock_pf(t, url, NULL, root, version);
}

int
tl_repo_unlock_pf(struct cf_ks_tenant *t, const char *url,
    struct cf_bk_prefetch *pf, struct cf_secbuf **root, uint32_t *version)
{
	uint32_t v = 0;
	int rc;

	*root = NULL;
	*version = 0;
	/*
	 * A repository's config is sealed under one root key version (the
	 * creation version, or the newest at its last `reencrypt
	 * --repository`; docs/kms.md, Root key rotation): open it with
	 * that one.  One
	 * that cannot be read here is left to the open that follows to
	 * report.  With pf, its thread has read the config (and goes on
	 * fetching while the key is unlocked).
	 */
	if (pf != NULL)
		rc = cf_bk_prefetch_key_version(pf, &v);
	else
		rc = cf_bk_repo_key_version(url, &v);
	if (rc < 0 || v > cf_ks_tenant_key_version(t))
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
	return tl_repo_open_pf(t, out, url, root, version, flags, NULL);
}

int
tl_repo_open_pf(struct cf_ks_tenant *t, struct cf_bk_repo **out,
    const char *url, const struct cf_secbuf *root, uint32_t version,
    int flags, struct cf_bk_prefetch *pf)
{
	struct cf_bk_keys *keys = NULL;
	struct cf_secbuf *other = NULL;
	uint32_t v[CF_BK_KEYS_MAX + 1];
	size_t n, i;
	int rc;

	*out = NULL;
	/*
	 * From here on the process holds a repository's keys and makes AES
	 * contexts whose key schedules live in OpenSSL's heap: its pages
	 * stay out of swap where locking cannot make an allocation fail
	 * (docs/crypto.md, "Secrets in memory").  Not before: the file
	 * KMS's Argon2id area (192 MiB, freed by now) would cost 0.5 s more
	 * locked.
	 */
	(void)cf_ks_lock_memory();
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
	if (pf != NULL)
		return cf_bk_repo_open_prefetched(out, pf, keys,
		    cf_ks_tenant_id(t), flags);
	return cf_bk_repo_open_url_keys(out, url, keys, cf_ks_tenant_id(t),
	    flags);
}

const char *
tl_repo_strerror(const char *url, int rc)
{
	if (strncmp(url, "s3://", 5) != 0)
		return strerror(-rc);
	switch (rc) {
	case -EPERM:
		return "the server's TLS certificate does not verify, or it "
		    "offers less than TLS 1.2 (a private CA: ca=FILE or "
		    "COFFER_S3_CA_FILE)";
	case -EACCES:
		return "access denied (the credentials are refused: access "
		    "key, secret, or the bucket's policy)";
	case -ENOKEY:
		return "no S3 credentials (AWS_ACCESS_KEY_ID and "
		    "AWS_SECRET_ACCESS_KEY, or credentials=FILE)";
	case -EHOSTUNREACH:
		return "the endpoint's host name does not resolve";
	case -ECONNREFUSED:
		return "the endpoint refuses connections (is the server up?)";
	case -EIO:
		return "the server failed the request or cut the connection "
		    "(5xx answers and cut connections are retried first, "
		    "within COFFER_S3_RETRY_SECONDS)";
	case -ETIMEDOUT:
		return "the endpoint does not answer in time";
	case -EOPNOTSUPP:
		return "the server does not implement a request coffer needs";
	case -ETIME:
		return "the server refuses this machine's clock: more than 15 "
		    "minutes from its own (RequestTimeTooSkewed; check NTP)";
	case -EDQUOT:
		return "the bucket's or the user's quota is full "
		    "(QuotaExceeded): raise it, or prune old snapshots";
	default:
		return strerror(-rc);
	}
}

/*
 * For the commands that move a repository's blobs (backup, restore,
 * verify): every chunk and blob is a malloc'd buffer of 0.5-8 MiB
 * (1 MiB on average) freed again a moment later, often by another
 * thread.  glibc serves such sizes by mmap, and its dynamic threshold
 * (the size of the last such block freed) and the heap trim that follows
 * it hand the pages back to the kernel, so every buffer faults its pages
 * in again: on this VM a seventh of a full backup's main thread
 * (docs/backup.md, "Sixteenth session").  Kept in the heap instead: the
 * peak is bounded by the writer's queue (QBYTES_MAX) and the workers as
 * before, so the resident size stays the same (145-150 MiB full backup
 * measured either way).
 */
void
tl_malloc_tune(void)
{
	(void)mallopt(M_MMAP_THRESHOLD, 32 << 20);
	(void)mallopt(M_TRIM_THRESHOLD, 128 << 20);
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

/* ---- the progress line (backup, restore) ------------------------------ */

void
tl_progress_start(struct tl_progress *p, int on)
{
	p->on = on;
	p->drawn = 0;
	p->t0 = cf_mono_ns();
	p->last = 0;
}

/* "42 s", "3:07", "2:03:07" */
static void
fmt_left(char *buf, size_t cap, double s)
{
	unsigned long long t = s > 0 && s < 1e9 ? (unsigned long long)(s +
	    0.5) : 0;

	if (t < 100)
		snprintf(buf, cap, "%llu s", t);
	else if (t < 3600)
		snprintf(buf, cap, "%llu:%02llu", t / 60, t % 60);
	else
		snprintf(buf, cap, "%llu:%02llu:%02llu", t / 3600,
		    t / 60 % 60, t % 60);
}

int
tl_progress_due(const struct tl_progress *p)
{
	return p->on && (p->last == 0 || cf_mono_ns() - p->last >= 200000000);
}

void
tl_progress_show(struct tl_progress *p, uint64_t files,
    uint64_t total_files, uint64_t bytes, uint64_t total_bytes,
    uint64_t done, uint64_t total)
{
	/* Pieces in the order shown; dropped last-listed-first to fit. */
	enum { P_FILES, P_BYTES, P_PCT, P_RATE, P_LEFT, NP };
	static const int drop[] = { P_RATE, P_FILES, P_LEFT, P_BYTES };
	char piece[NP][64], line[512], left[32];
	struct winsize ws;
	size_t cols = 80, len, i, k;
	double el, rate, frac;
	int64_t t;
	int keep[NP];

	if (!p->on)
		return;
	t = cf_mono_ns();
	if (p->last != 0 && t - p->last < 200000000)
		return;
	p->last = t;
	if (ioctl(2, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
		cols = ws.ws_col;
	el = (double)(t - p->t0) / 1e9;
	rate = el > 0 ? (double)bytes / el : 0;
	for (i = 0; i < NP; i++) {
		piece[i][0] = '\0';
		keep[i] = 0;
	}
	if (total_files > 0)
		snprintf(piece[P_FILES], sizeof(piece[0]), "%llu/%llu files",
		    (unsigned long long)files,
		    (unsigned long long)total_files);
	else
		snprintf(piece[P_FILES], sizeof(piece[0]), "%llu files",
		    (unsigned long long)files);
	if (total_bytes > 0)
		snprintf(piece[P_BYTES], sizeof(piece[0]), "%.1f/%.1f MiB",
		    (double)bytes / (1 << 20), (double)total_bytes / (1 << 20));
	else
		snprintf(piece[P_BYTES], sizeof(piece[0]), "%.1f MiB",
		    (double)bytes / (1 << 20));
	keep[P_FILES] = keep[P_BYTES] = 1;
	if (total > 0) {
		frac = done < total ? (double)done / (double)total : 1.0;
		snprintf(piece[P_PCT], sizeof(piece[0]), "%.0f %%",
		    100.0 * frac);
		keep[P_PCT] = 1;
		/* After a redraw's time and 1 %: earlier guesses are noise. */
		if (done < total && done >= total / 100 && done > 0 &&
		    el >= 0.2) {
			fmt_left(left, sizeof(left), el * (double)(total -
			    done) / (double)done);
			snprintf(piece[P_LEFT], sizeof(piece[0]), "%s left",
			    left);
			keep[P_LEFT] = 1;
		}
	}
	snprintf(piece[P_RATE], sizeof(piece[0]), "%.1f MiB/s",
	    rate / (1 << 20));
	keep[P_RATE] = 1;
	/* The last column stays free: a full line wraps on some terminals. */
	for (k = 0;; k++) {
		line[0] = '\0';
		len = 0;
		for (i = 0; i < NP; i++) {
			if (!keep[i])
				continue;
			len += (size_t)snprintf(line + len, sizeof(line) - len,
			    "%s%s", len > 0 ? ", " : "", piece[i]);
			if (len >= sizeof(line))
				len = sizeof(line) - 1;
		}
		if (len < cols || k == sizeof(drop) / sizeof(drop[0]) ||
		    (drop[k] == P_BYTES && !keep[P_PCT]))
			break;
		keep[drop[k]] = 0;
	}
	if (len >= cols)
		line[cols > 1 ? cols - 1 : 0] = '\0';
	/* To the line's start, the line, then erase what an older one left. */
	fprintf(stderr, "\r%s\033[K", line);
	fflush(stderr);
	p->drawn = 1;
}

void
tl_progress_end(struct tl_progress *p)
{
	if (!p->on || !p->drawn)
		return;
	fputs("\r\033[K", stderr);
	fflush(stderr);
	p->drawn = 0;
}

/* ---- trees of any depth (drill, purge: scratch trees and stores) ----- */

/* Walks the directory fd (owned: closed here), depth levels down. */
static int
walk_dir(int fd, int depth, tl_walk_fn *fn, void *arg)
{
	struct dirent *de;
	struct stat st;
	DIR *d;
	int sub, rc = 0;

	d = fdopendir(fd);
	if (d == NULL) {
		rc = -errno;
		close(fd);
		return rc;
	}
	for (;;) {
		errno = 0;
		de = readdir(d);
		if (de == NULL) {
			rc = errno != 0 ? -errno : 0;
			break;
		}
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0)
			continue;
		if (fstatat(dirfd(d), de->d_name, &st,
		    AT_SYMLINK_NOFOLLOW) < 0) {
			if (errno == ENOENT)
				continue;	/* removed meanwhile */
			rc = -errno;
			break;
		}
		rc = fn(arg, dirfd(d), de->d_name, &st, 0);
		if (rc != 0)
			break;
		if (!S_ISDIR(st.st_mode))
			continue;
		if (depth >= TL_WALK_DEPTH) {
			rc = -ELOOP;
			break;
		}
		sub = openat(dirfd(d), de->d_name, O_RDONLY | O_DIRECTORY |
		    O_NOFOLLOW | O_CLOEXEC);
		if (sub < 0) {
			rc = -errno;
			break;
		}
		rc = walk_dir(sub, depth + 1, fn, arg);
		if (rc == 0)
			rc = fn(arg, dirfd(d), de->d_name, &st, 1);
		if (rc != 0)
			break;
	}
	closedir(d);
	return rc;
}

int
tl_walk_at(int dfd, tl_walk_fn *fn, void *arg)
{
	int fd;

	/* Its own descriptor: readdir moves the offset, closedir closes. */
	fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	return walk_dir(fd, 1, fn, arg);
}

struct rm_counts {
	uint64_t *files, *bytes;
};

static int
remove_fn(void *arg, int dfd, const char *name, const struct stat *st,
    int post)
{
	struct rm_counts *c = arg;

	if (S_ISDIR(st->st_mode)) {
		if (post && unlinkat(dfd, name, AT_REMOVEDIR) < 0 &&
		    errno != ENOENT)
			return -errno;
		return 0;
	}
	if (S_ISREG(st->st_mode)) {
		if (c->files != NULL)
			(*c->files)++;
		if (c->bytes != NULL)
			*c->bytes += (uint64_t)st->st_size;
	}
	if (unlinkat(dfd, name, 0) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

int
tl_tree_remove(const char *path, uint64_t *files, uint64_t *bytes)
{
	struct rm_counts c = { files, bytes };
	struct stat st;
	int fd, rc;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISDIR(st.st_mode))
		return remove_fn(&c, AT_FDCWD, path, &st, 0);
	fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	rc = tl_walk_at(fd, remove_fn, &c);
	close(fd);
	if (rc == 0 && rmdir(path) < 0 && errno != ENOENT)
		rc = -errno;
	return rc;
}
