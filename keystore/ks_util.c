/*
 * ks_util.c - small file and encoding helpers for the keystore.
 *
 * Every write of state that must survive a crash goes through
 * ks_write_file_atomic(): temporary file, fsync, rename, fsync of the
 * directory.  Reads are bounded: a file larger than its documented limit
 * is refused before it is read.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/openat2.h>
#include <sodium.h>

#include "ks_int.h"

/*
 * O_NOFOLLOW with O_DIRECTORY reports a symlink as ENOTDIR: say ELOOP so
 * that every refused symlink reads the same.
 */
static int
symlink_errno(int dirfd, const char *name)
{
	struct stat st;
	int rc = -errno;

	if (rc == -ENOTDIR && fstatat(dirfd, name, &st,
	    AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
		rc = -ELOOP;
	return rc;
}

/*
 * The fallback when openat2 is missing (Linux before 5.6, or a seccomp
 * filter that refuses it): walk the path one component at a time, each
 * opened with O_NOFOLLOW, so no symlink is followed anywhere in it and
 * ".." cannot climb out of dirfd.
 */
static int
open_walk(int dirfd, const char *path, int flags, mode_t mode)
{
	char buf[PATH_MAX];
	char *comp, *slash;
	int fd = dirfd, next;

	if (strlen(path) >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, strlen(path) + 1);
	comp = buf;
	for (;;) {
		slash = strchr(comp, '/');
		if (slash == NULL)
			break;
		*slash = '\0';
		if (strcmp(comp, "..") == 0) {
			next = -EXDEV;
			goto next;
		}
		if (comp[0] == '\0' || strcmp(comp, ".") == 0) {
			comp = slash + 1;
			continue;
		}
		next = openat(fd, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW |
		    O_CLOEXEC);
		if (next < 0)
			next = symlink_errno(fd, comp);
next:
		if (fd != dirfd)
			close(fd);
		if (next < 0)
			return next;
		fd = next;
		comp = slash + 1;
	}
	if (strcmp(comp, "..") == 0)
		next = -EXDEV;
	else {
		next = openat(fd, comp[0] == '\0' ? "." : comp, flags, mode);
		if (next < 0)
			next = symlink_errno(fd, comp);
	}
	if (fd != dirfd)
		close(fd);
	return next;
}

int
ks_openat(int dirfd, const char *path, int flags, mode_t mode)
{
	struct stat st;
	int fd = -ENOSYS, fl;

	/*
	 * O_NONBLOCK: opening a FIFO someone planted must not hang (a FIFO
	 * opened for reading without a writer blocks in open).  The type is
	 * checked with fstat on what was opened, then the flag is cleared.
	 */
	flags |= O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK;
	if ((flags & O_CREAT) == 0)
		mode = 0;
	if (dirfd != AT_FDCWD && path[0] != '/') {
#ifdef SYS_openat2
		struct open_how how;

		memset(&how, 0, sizeof(how));
		/* Without O_NOFOLLOW, a last-component symlink is ELOOP too. */
		how.flags = (uint64_t)(flags & ~O_NOFOLLOW);
		how.mode = mode;
		how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS;
		fd = (int)syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
		if (fd < 0)
			fd = -errno;
#endif
		if (fd == -ENOSYS || fd == -EPERM)
			fd = open_walk(dirfd, path, flags, mode);
	} else {
		/*
		 * An absolute path the operator configured: symlinks above
		 * the last component are the operator's business.
		 */
		fd = openat(dirfd, path, flags, mode);
		if (fd < 0)
			fd = -errno;
	}
	if (fd == -ELOOP || fd == -EXDEV)
		return ks_err(-ELOOP, "%s: a symbolic link or '..' in the "
		    "path; coffer follows none there, remove it", path);
	if (fd == -ENXIO)
		return ks_err(-EINVAL, "%s is not a regular file (a FIFO or "
		    "socket?); remove it", path);
	if (fd < 0)
		return fd;
	if (fstat(fd, &st) != 0) {
		fl = -errno;
		close(fd);
		return fl;
	}
	if ((flags & O_DIRECTORY) != 0 ? !S_ISDIR(st.st_mode) :
	    !S_ISREG(st.st_mode)) {
		close(fd);
		return ks_err(-EINVAL, "%s is not a regular %s (a FIFO, "
		    "device or symlink was put there?); remove it", path,
		    (flags & O_DIRECTORY) != 0 ? "directory" : "file");
	}
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0) {
		fl = -errno;
		close(fd);
		return fl;
	}
	return fd;
}

int
ks_read_secret(int dirfd, const char *path, const char *what,
    struct cf_secbuf *sb, size_t max, size_t *len)
{
	unsigned char *p = cf_secbuf_data(sb);
	unsigned char extra;
	struct stat st;
	size_t got = 0;
	ssize_t n;
	int fd, rc;

	*len = 0;
	if (max > cf_secbuf_len(sb))
		cf_misuse("ks_read_secret: max exceeds the buffer");
	fd = ks_openat(dirfd, path, O_RDONLY, 0);
	if (fd < 0) {
		/* ks_openat explains a symlink or a non-regular file. */
		if (fd == -ELOOP || fd == -EINVAL)
			return fd;
		return ks_err(fd, "cannot open %s %s: %s", what, path,
		    strerror(-fd));
	}
	if (fstat(fd, &st) != 0) {
		rc = -errno;
		goto out;
	}
	if ((st.st_mode & 077) != 0) {
		rc = ks_err(-EACCES, "%s %s is readable by group or others; "
		    "chmod 600 it", what, path);
		goto out;
	}
	/* Whoever owns the file can change the secret under us. */
	if (st.st_uid != geteuid() && st.st_uid != 0) {
		rc = ks_err(-EACCES, "%s %s is owned by uid %u, not by uid %u "
		    "or root", what, path, (unsigned)st.st_uid,
		    (unsigned)geteuid());
		goto out;
	}
	for (;;) {
		/* One byte past max, read aside, tells a file that is too long. */
		if (got < max)
			n = read(fd, p + got, max - got);
		else
			n = read(fd, &extra, 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = -errno;
			goto out;
		}
		if (n == 0)
			break;
		if (got == max) {
			rc = ks_err(-EFBIG, "%s %s is longer than %zu bytes",
			    what, path, max);
			goto out;
		}
		got += (size_t)n;
	}
	*len = got;
	rc = 0;
out:
	sodium_memzero(&extra, sizeof(extra));
	close(fd);
	return rc;
}

int
cf_ks_read_fd(int fd, size_t max, unsigned char **buf, size_t *len)
{
	struct stat st;
	unsigned char *b = NULL;
	size_t got = 0;
	ssize_t n;

	*buf = NULL;
	*len = 0;
	if (fstat(fd, &st) != 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	if ((unsigned long long)st.st_size > max)
		return -EFBIG;
	b = malloc((size_t)st.st_size + 1);
	if (b == NULL)
		return -ENOMEM;
	while (got < (size_t)st.st_size) {
		n = read(fd, b + got, (size_t)st.st_size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			free(b);
			return -errno;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	b[got] = '\0';
	*buf = b;
	*len = got;
	return 0;
}

int
ks_read_file(int dirfd, const char *path, size_t max, unsigned char **buf,
    size_t *len)
{
	int fd, rc;

	*buf = NULL;
	*len = 0;
	fd = ks_openat(dirfd, path, O_RDONLY, 0);
	if (fd < 0)
		return fd;
	rc = cf_ks_read_fd(fd, max, buf, len);
	close(fd);
	return rc;
}

static int
write_all(int fd, const void *buf, size_t len)
{
	const unsigned char *p = buf;
	ssize_t n;

	while (len > 0) {
		n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int
ks_fsync_parent(int dirfd, const char *path)
{
	char dir[PATH_MAX];
	const char *slash = strrchr(path, '/');
	int fd, rc = 0;

	if (slash == NULL) {
		dir[0] = '.';
		dir[1] = '\0';
	} else {
		if ((size_t)(slash - path) >= sizeof(dir))
			return -ENAMETOOLONG;
		memcpy(dir, path, (size_t)(slash - path));
		dir[slash - path] = '\0';
		if (dir[0] == '\0') {
			dir[0] = '/';
			dir[1] = '\0';
		}
	}
	fd = openat(dirfd, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fsync(fd) != 0)
		rc = -errno;
	close(fd);
	return rc;
}

int
ks_write_file_atomic(int dirfd, const char *path, const void *buf, size_t len,
    mode_t mode)
{
	char tmp[PATH_MAX];
	unsigned char rnd[8];
	char rhex[17];
	int fd = -1, rc;

	randombytes_buf(rnd, sizeof(rnd));
	ks_hex(rhex, rnd, sizeof(rnd));
	if (snprintf(tmp, sizeof(tmp), "%s.tmp-%s", path, rhex) >=
	    (int)sizeof(tmp))
		return -ENAMETOOLONG;
	fd = ks_openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL, mode);
	if (fd < 0)
		return fd;
	if (fchmod(fd, mode) != 0) {
		rc = -errno;
		goto fail;
	}
	rc = write_all(fd, buf, len);
	if (rc < 0)
		goto fail;
	if (fsync(fd) != 0) {
		rc = -errno;
		goto fail;
	}
	if (close(fd) != 0) {
		fd = -1;
		rc = -errno;
		goto fail;
	}
	fd = -1;
	if (renameat(dirfd, tmp, dirfd, path) != 0) {
		rc = -errno;
		goto fail;
	}
	return ks_fsync_parent(dirfd, path);
fail:
	if (fd >= 0)
		close(fd);
	unlinkat(dirfd, tmp, 0);
	return rc;
}

int
cf_ks_write_atomic(const char *path, const void *buf, size_t len, mode_t mode)
{
	char dir[PATH_MAX];
	const char *base = strrchr(path, '/');
	int dirfd, rc;

	if (base == NULL) {
		snprintf(dir, sizeof(dir), ".");
		base = path;
	} else if ((size_t)(base - path) >= sizeof(dir)) {
		return -ENAMETOOLONG;
	} else {
		memcpy(dir, path, (size_t)(base - path));
		dir[base - path] = '\0';
		if (dir[0] == '\0')
			snprintf(dir, sizeof(dir), "/");
		base++;
	}
	dirfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0)
		return -errno;
	rc = ks_write_file_atomic(dirfd, base, buf, len, mode);
	close(dirfd);
	return rc;
}

int
ks_mkdirs(int dirfd, const char *path, mode_t mode)
{
	char buf[PATH_MAX];
	size_t i, len = strlen(path);

	if (len >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, len + 1);
	for (i = 1; i <= len; i++) {
		if (buf[i] != '/' && buf[i] != '\0')
			continue;
		buf[i] = '\0';
		if (mkdirat(dirfd, buf, mode) != 0 && errno != EEXIST)
			return -errno;
		if (i < len)
			buf[i] = '/';
	}
	return 0;
}

int
ks_shred_file(int dirfd, const char *path)
{
	unsigned char junk[4096];
	struct stat st;
	off_t done = 0;
	int fd, rc = 0;

	/*
	 * Overwriting does not defeat copy-on-write or flash remapping; the
	 * real guarantee of a crypto-shred is that the KEK-wrapped key is
	 * gone from every place coffer keeps it.  The overwrite is cheap
	 * defence in depth on ordinary file systems.
	 */
	fd = ks_openat(dirfd, path, O_WRONLY, 0);
	if (fd < 0)
		return fd;
	if (fstat(fd, &st) != 0) {
		rc = -errno;
		goto out;
	}
	while (done < st.st_size) {
		size_t n = sizeof(junk);

		if ((off_t)n > st.st_size - done)
			n = (size_t)(st.st_size - done);
		randombytes_buf(junk, n);
		rc = write_all(fd, junk, n);
		if (rc < 0)
			goto out;
		done += (off_t)n;
	}
	if (fsync(fd) != 0)
		rc = -errno;
out:
	close(fd);
	if (rc < 0)
		return rc;
	if (unlinkat(dirfd, path, 0) != 0)
		return -errno;
	return ks_fsync_parent(dirfd, path);
}

void
ks_hex(char *hex, const unsigned char *bin, size_t len)
{
	sodium_bin2hex(hex, len * 2 + 1, bin, len);
}

int
ks_unhex(unsigned char *bin, size_t len, const char *hex)
{
	size_t got = 0, i;

	if (strlen(hex) != len * 2)
		return -EPROTO;
	for (i = 0; i < len * 2; i++)
		if (!((hex[i] >= '0' && hex[i] <= '9') ||
		    (hex[i] >= 'a' && hex[i] <= 'f')))
			return -EPROTO;
	if (sodium_hex2bin(bin, len, hex, len * 2, NULL, &got, NULL) != 0 ||
	    got != len)
		return -EPROTO;
	return 0;
}

int
ks_json_load(int dirfd, const char *path, size_t max, json_t **out)
{
	unsigned char *buf = NULL;
	json_error_t jerr;
	json_t *j;
	size_t len;
	int rc;

	*out = NULL;
	rc = ks_read_file(dirfd, path, max, &buf, &len);
	if (rc < 0)
		return rc;
	j = json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES, &jerr);
	free(buf);
	if (j == NULL || !json_is_object(j)) {
		json_decref(j);
		return ks_err(-EPROTO, "%s: not a JSON object (line %d)", path,
		    jerr.line);
	}
	*out = j;
	return 0;
}

int
ks_json_save(int dirfd, const char *path, const json_t *obj, mode_t mode)
{
	char *s;
	int rc;

	s = json_dumps(obj, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	if (s == NULL)
		return -ENOMEM;
	/* json_dumps output has no trailing newline: add one for editors. */
	{
		size_t len = strlen(s);
		char *t = realloc(s, len + 2);

		if (t == NULL) {
			free(s);
			return -ENOMEM;
		}
		s = t;
		s[len] = '\n';
		s[len + 1] = '\0';
		rc = ks_write_file_atomic(dirfd, path, s, len + 1, mode);
	}
	free(s);
	return rc;
}
