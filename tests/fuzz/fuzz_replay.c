/*
 * fuzz_replay.c - a main() for the fuzz targets in builds without
 * libFuzzer (gcc, the default and ASan builds): calls
 * LLVMFuzzerTestOneInput() once on every file named on the command line,
 * or found directly inside a named directory, in sorted order, then once
 * on the empty input.  This is how the committed corpora and crashers are
 * replayed by `meson test` everywhere (after zstd's regression driver).
 *
 * Each input is copied into a heap buffer of exactly its size, so reads
 * past the end are caught by ASan as they would be under libFuzzer.  It
 * does not mutate, minimise or fork: a crash ends the run, and the name of
 * the input being run is on stderr just before it.
 *
 * Exit status: 0 if every input ran, 1 if an argument or file could not
 * be read (a missing corpus is a build mistake, not a pass).
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define REPLAY_MAX_BYTES (16U << 20)	/* larger inputs are a mistake */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static unsigned long nrun;

static int
run_file(const char *path)
{
	struct stat st;
	unsigned char *buf = NULL;
	size_t len, got = 0;
	FILE *fp;
	int rc = -1;

	fp = fopen(path, "rb");
	if (fp == NULL) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (fstat(fileno(fp), &st) != 0 || !S_ISREG(st.st_mode)) {
		fprintf(stderr, "replay: %s: not a regular file\n", path);
		goto out;
	}
	if ((unsigned long long)st.st_size > REPLAY_MAX_BYTES) {
		fprintf(stderr, "replay: %s: larger than %u bytes\n", path,
		    REPLAY_MAX_BYTES);
		goto out;
	}
	len = (size_t)st.st_size;
	/* malloc(0) may return NULL; libFuzzer never passes NULL. */
	buf = malloc(len > 0 ? len : 1);
	if (buf == NULL) {
		fprintf(stderr, "replay: %s: out of memory\n", path);
		goto out;
	}
	while (got < len) {
		size_t n = fread(buf + got, 1, len - got, fp);

		if (n == 0)
			break;
		got += n;
	}
	if (got != len || ferror(fp)) {
		fprintf(stderr, "replay: %s: short read\n", path);
		goto out;
	}
	fprintf(stderr, "replay: %s (%zu bytes)\n", path, len);
	(void)LLVMFuzzerTestOneInput(buf, len);
	nrun++;
	rc = 0;
out:
	free(buf);
	fclose(fp);
	return rc;
}

static int
cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int
run_dir(const char *dir)
{
	DIR *d;
	struct dirent *de;
	char **names = NULL, **nn, path[4096];
	size_t n = 0, cap = 0, i;
	int rc = 0, len;

	d = opendir(dir);
	if (d == NULL) {
		fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno));
		return -1;
	}
	for (;;) {
		de = readdir(d);
		if (de == NULL)
			break;
		if (de->d_name[0] == '.')
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			nn = realloc(names, cap * sizeof(*names));
			if (nn == NULL) {
				rc = -1;
				goto out;
			}
			names = nn;
		}
		names[n] = strdup(de->d_name);
		if (names[n] == NULL) {
			rc = -1;
			goto out;
		}
		n++;
	}
	if (n > 0)
		qsort(names, n, sizeof(*names), cmp_names);
	for (i = 0; i < n; i++) {
		len = snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		if (len < 0 || (size_t)len >= sizeof(path)) {
			fprintf(stderr, "replay: %s/%s: path too long\n", dir,
			    names[i]);
			rc = -1;
			continue;
		}
		if (run_file(path) != 0)
			rc = -1;
	}
out:
	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
	closedir(d);
	return rc;
}

int
main(int argc, char **argv)
{
	static const uint8_t empty[1];
	struct stat st;
	int i, rc = 0;

	if (argc < 2) {
		fprintf(stderr, "usage: %s CORPUS_DIR|FILE...\n", argv[0]);
		return 2;
	}
	for (i = 1; i < argc; i++) {
		if (stat(argv[i], &st) != 0) {
			fprintf(stderr, "replay: %s: %s\n", argv[i],
			    strerror(errno));
			rc = 1;
			continue;
		}
		if (S_ISDIR(st.st_mode) ? run_dir(argv[i]) != 0 :
		    run_file(argv[i]) != 0)
			rc = 1;
	}
	(void)LLVMFuzzerTestOneInput(empty, 0);
	nrun++;
	printf("replay: %lu inputs run%s\n", nrun, rc ? ", some unreadable" :
	    "");
	return rc;
}
