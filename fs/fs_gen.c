/*
 * fs_gen.c - the generation log: the newest generation of every regular
 * file of a store, kept in coffer's home, outside the store
 * (docs/format/fs.md, File generations).
 *
 * The daemon raises a file's generation in the file's backing xattr
 * before it changes the file, then appends (file id, generation) here.
 * A file whose xattr is older than this log's entry is an older copy of
 * itself: a rollback.  The log is replayed into an open-addressing table
 * at mount and compacted when it has grown well past the table.  Records
 * are appended with one write(2) each and not synced: after a power loss
 * the log may lag the store, which only makes it accept a generation
 * (larger is always taken as progress), never refuse one.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "fs_int.h"

#define LOG_MAGIC "\x89" "CFGN\r\n\x1a"
#define LOG_VERSION 1U
#define LOG_MAX ((size_t)1 << 32)	/* 4 GiB: 134 M records */

struct slot {
	unsigned char id[CF_KS_ID_BYTES];
	uint64_t gen;			/* 0: empty */
};

struct fs_gen {
	pthread_mutex_t mutex;
	int dirfd;			/* where the log lives */
	char *name;			/* its name there */
	int fd;				/* O_APPEND */
	struct slot *slots;
	size_t cap, live;		/* cap is a power of two */
	size_t records;			/* in the log file */
};

static void
put64(unsigned char *p, uint64_t v)
{
	size_t i;

	for (i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t
get64(const unsigned char *p)
{
	uint64_t v = 0;
	size_t i;

	for (i = 0; i < 8; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

/* check = the first 8 bytes of BLAKE2b-128(id || gen). */
static void
record_check(const unsigned char *rec, unsigned char check[8])
{
	unsigned char h[16];

	crypto_generichash(h, sizeof(h), rec, 24, NULL, 0);
	memcpy(check, h, 8);
}

void
cf_fs_genlog_header(unsigned char out[CF_FS_GENLOG_HEADER])
{
	memset(out, 0, CF_FS_GENLOG_HEADER);
	memcpy(out, LOG_MAGIC, 8);
	out[8] = LOG_VERSION;
}

void
cf_fs_genlog_record(const unsigned char id[CF_KS_ID_BYTES], uint64_t gen,
    unsigned char out[CF_FS_GENLOG_RECORD])
{
	memcpy(out, id, CF_KS_ID_BYTES);
	put64(out + 16, gen);
	record_check(out, out + 24);
}

int
cf_fs_genlog_parse(const unsigned char *buf, size_t len,
    int (*fn)(void *, const unsigned char *, uint64_t), void *arg,
    size_t *used)
{
	unsigned char check[8];
	size_t off, n, i;
	int rc;

	*used = 0;
	if (len < CF_FS_GENLOG_HEADER || memcmp(buf, LOG_MAGIC, 8) != 0 ||
	    buf[8] != LOG_VERSION || !sodium_is_zero(buf + 9, 7))
		return -EPROTO;
	n = (len - CF_FS_GENLOG_HEADER) / CF_FS_GENLOG_RECORD;
	for (i = 0; i < n; i++) {
		off = CF_FS_GENLOG_HEADER + i * CF_FS_GENLOG_RECORD;
		record_check(buf + off, check);
		if (memcmp(check, buf + off + 24, 8) != 0) {
			if (i + 1 == n && off + CF_FS_GENLOG_RECORD == len)
				break;	/* a torn last record */
			return -EPROTO;
		}
		if (fn != NULL) {
			rc = fn(arg, buf + off, get64(buf + off + 16));
			if (rc < 0)
				return rc;
		}
		*used = off + CF_FS_GENLOG_RECORD;
	}
	if (*used == 0)
		*used = CF_FS_GENLOG_HEADER;
	return 0;
}

/* ---- the table ----------------------------------------------------------- */

static size_t
slot_of(const struct fs_gen *g, const unsigned char *id)
{
	/* File ids are random: their first bytes are a fine hash. */
	return (size_t)get64(id) & (g->cap - 1);
}

static struct slot *
find(struct fs_gen *g, const unsigned char *id)
{
	size_t i = slot_of(g, id);

	while (g->slots[i].gen != 0) {
		if (memcmp(g->slots[i].id, id, CF_KS_ID_BYTES) == 0)
			return &g->slots[i];
		i = (i + 1) & (g->cap - 1);
	}
	return NULL;
}

static int grow(struct fs_gen *g);

static int
table_set(struct fs_gen *g, const unsigned char *id, uint64_t gen)
{
	struct slot *s = find(g, id);
	size_t i;
	int rc;

	if (s != NULL) {
		s->gen = gen;
		return 0;
	}
	if ((g->live + 1) * 2 > g->cap) {
		rc = grow(g);
		if (rc < 0)
			return rc;
	}
	i = slot_of(g, id);
	while (g->slots[i].gen != 0)
		i = (i + 1) & (g->cap - 1);
	memcpy(g->slots[i].id, id, CF_KS_ID_BYTES);
	g->slots[i].gen = gen;
	g->live++;
	return 0;
}

/* Removes an entry; linear probing: shift the cluster back. */
static void
table_del(struct fs_gen *g, const unsigned char *id)
{
	struct slot *s = find(g, id);
	size_t i, j, k;

	if (s == NULL)
		return;
	i = (size_t)(s - g->slots);
	g->slots[i].gen = 0;
	g->live--;
	for (j = (i + 1) & (g->cap - 1); g->slots[j].gen != 0;
	    j = (j + 1) & (g->cap - 1)) {
		k = slot_of(g, g->slots[j].id);
		/* Move j to the hole at i unless its home lies in (i, j]. */
		if ((i <= j) ? (i < k && k <= j) : (i < k || k <= j))
			continue;
		g->slots[i] = g->slots[j];
		g->slots[j].gen = 0;
		i = j;
	}
}

static int
grow(struct fs_gen *g)
{
	struct slot *old = g->slots;
	size_t oldcap = g->cap, i;

	g->cap = oldcap == 0 ? 1024 : oldcap * 2;
	g->slots = calloc(g->cap, sizeof(*g->slots));
	if (g->slots == NULL) {
		g->slots = old;
		g->cap = oldcap;
		return -ENOMEM;
	}
	g->live = 0;
	for (i = 0; i < oldcap; i++)
		if (old[i].gen != 0)
			(void)table_set(g, old[i].id, old[i].gen);
	free(old);
	return 0;
}

static int
replay(void *arg, const unsigned char *id, uint64_t gen)
{
	struct fs_gen *g = arg;

	if (gen == 0) {
		table_del(g, id);
		return 0;
	}
	return table_set(g, id, gen);
}

/* ---- the file ------------------------------------------------------------ */

static int
write_all(int fd, const unsigned char *b, size_t n)
{
	ssize_t w;

	while (n > 0) {
		w = write(fd, b, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		b += w;
		n -= (size_t)w;
	}
	return 0;
}

/*
 * Writes the table as a new log (temporary file, fsync, rename, fsync of
 * the directory) and appends to it from now on.  Caller holds the mutex
 * or is alone.
 */
static int
compact(struct fs_gen *g)
{
	unsigned char buf[CF_FS_GENLOG_HEADER + 128 * CF_FS_GENLOG_RECORD];
	char tmp[300];
	size_t i, n = CF_FS_GENLOG_HEADER;
	int fd, rc = 0;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", g->name) >=
	    sizeof(tmp))
		return -ENAMETOOLONG;
	fd = openat(g->dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC |
	    O_NOFOLLOW, 0600);
	if (fd < 0)
		return -errno;
	cf_fs_genlog_header(buf);
	for (i = 0; i < g->cap && rc == 0; i++) {
		if (g->slots[i].gen == 0)
			continue;
		if (n + CF_FS_GENLOG_RECORD > sizeof(buf)) {
			rc = write_all(fd, buf, n);
			n = 0;
		}
		cf_fs_genlog_record(g->slots[i].id, g->slots[i].gen, buf + n);
		n += CF_FS_GENLOG_RECORD;
	}
	if (rc == 0)
		rc = write_all(fd, buf, n);
	if (rc == 0 && fsync(fd) != 0)
		rc = -errno;
	close(fd);
	if (rc == 0 && renameat(g->dirfd, tmp, g->dirfd, g->name) != 0)
		rc = -errno;
	if (rc < 0) {
		(void)unlinkat(g->dirfd, tmp, 0);
		return rc;
	}
	(void)fsync(g->dirfd);
	fd = openat(g->dirfd, g->name, O_WRONLY | O_APPEND | O_CLOEXEC |
	    O_NOFOLLOW);
	if (fd < 0)
		return -errno;
	if (g->fd >= 0)
		close(g->fd);
	g->fd = fd;
	g->records = g->live;
	return 0;
}

/* The table of the log at path (an absent log is empty); nothing written. */
static int
gen_load(struct fs_gen **out, const char *path, int reset)
{
	struct fs_gen *g;
	unsigned char *buf = NULL;
	const char *slash;
	struct stat st;
	size_t used;
	ssize_t n;
	int fd, rc;

	*out = NULL;
	g = calloc(1, sizeof(*g));
	if (g == NULL)
		return -ENOMEM;
	pthread_mutex_init(&g->mutex, NULL);
	g->fd = -1;
	slash = strrchr(path, '/');
	if (slash == NULL) {
		g->dirfd = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
		g->name = strdup(path);
	} else {
		char *dir = strndup(path, (size_t)(slash - path) + 1);

		g->dirfd = dir == NULL ? -1 : open(dir, O_PATH | O_DIRECTORY |
		    O_CLOEXEC);
		free(dir);
		g->name = strdup(slash + 1);
	}
	rc = g->dirfd < 0 ? -errno : g->name == NULL ? -ENOMEM : grow(g);
	if (rc < 0)
		goto fail;
	fd = reset ? -1 : openat(g->dirfd, g->name, O_RDONLY | O_CLOEXEC |
	    O_NOFOLLOW);
	if (fd < 0 && !reset && errno != ENOENT) {
		rc = -errno;
		goto fail;
	}
	if (fd >= 0) {
		if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
		    (size_t)st.st_size > LOG_MAX) {
			rc = fstat(fd, &st) != 0 ? -errno : -EPROTO;
			close(fd);
			goto fail;
		}
		buf = malloc((size_t)st.st_size + 1);
		n = buf == NULL ? -1 : pread(fd, buf, (size_t)st.st_size, 0);
		close(fd);
		if (n != (ssize_t)st.st_size) {
			rc = buf == NULL ? -ENOMEM : -EIO;
			goto fail;
		}
		rc = cf_fs_genlog_parse(buf, (size_t)n, replay, g, &used);
		free(buf);
		buf = NULL;
		if (rc < 0)
			goto fail;
	}
	*out = g;
	return 0;
fail:
	free(buf);
	fs_gen_close(g);
	return rc;
}

int
fs_gen_open(struct fs_gen **out, const char *path, int reset)
{
	int rc;

	rc = gen_load(out, path, reset);
	/* Start from a compact log: drops forgotten files and a torn tail. */
	if (rc == 0)
		rc = compact(*out);
	if (rc < 0) {
		fs_gen_close(*out);
		*out = NULL;
	}
	return rc;
}

int
fs_gen_read(struct fs_gen **out, const char *path)
{
	return gen_load(out, path, 0);
}

void
fs_gen_close(struct fs_gen *g)
{
	if (g == NULL)
		return;
	if (g->fd >= 0) {
		(void)fdatasync(g->fd);
		close(g->fd);
	}
	if (g->dirfd >= 0)
		close(g->dirfd);
	free(g->name);
	free(g->slots);
	pthread_mutex_destroy(&g->mutex);
	free(g);
}

uint64_t
fs_gen_get(struct fs_gen *g, const unsigned char id[CF_KS_ID_BYTES])
{
	struct slot *s;
	uint64_t gen;

	pthread_mutex_lock(&g->mutex);
	s = find(g, id);
	gen = s != NULL ? s->gen : 0;
	pthread_mutex_unlock(&g->mutex);
	return gen;
}

int
fs_gen_set(struct fs_gen *g, const unsigned char id[CF_KS_ID_BYTES],
    uint64_t gen)
{
	unsigned char rec[CF_FS_GENLOG_RECORD];
	int rc;

	if (g->fd < 0)
		return -EBADF;	/* read with fs_gen_read: never written */
	cf_fs_genlog_record(id, gen, rec);
	pthread_mutex_lock(&g->mutex);
	if (gen == 0) {
		if (find(g, id) == NULL) {
			pthread_mutex_unlock(&g->mutex);
			return 0;	/* nothing to forget */
		}
		table_del(g, id);
		rc = 0;
	} else {
		rc = table_set(g, id, gen);
	}
	if (rc == 0)
		rc = write_all(g->fd, rec, sizeof(rec));
	if (rc == 0 && ++g->records > 4 * g->live + 65536)
		rc = compact(g);
	pthread_mutex_unlock(&g->mutex);
	return rc;
}
