/*
 * cf_test.h - the tiny harness every unit test links.
 *
 * A test program lists its cases in an array and calls cf_test_run() from
 * main().  Output is TAP (meson's "tap" protocol), one line per case.  A
 * failed CHECK prints the file, line and expression, marks the case failed
 * and returns from the case function.  It does not do anything clever: no
 * forking, no fixtures beyond a scratch directory per case.
 */
#ifndef CF_TEST_H
#define CF_TEST_H

#include <stddef.h>

struct cf_test_case {
	const char *name;
	void (*fn)(void);
};

/* Runs every case (or those named in argv); returns the exit status. */
int cf_test_run(const struct cf_test_case *cases, size_t n, int argc,
    char **argv);

/* Marks the current case failed (used by the CHECK macros). */
void cf_test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * A fresh scratch directory for the current case, removed with all its
 * content when the case ends.  Owned by the harness.
 */
const char *cf_test_tmpdir(void);

/* Path of a file under tests/vectors (static buffer, valid until next call). */
const char *cf_test_vector_path(const char *name);

/* Reads a whole file; returns malloc'd bytes (NUL-terminated) or NULL. */
unsigned char *cf_test_read_file(const char *path, size_t *len);
/* Writes a whole file; returns 0 or -errno. */
int cf_test_write_file(const char *path, const void *buf, size_t len);

/* Decodes hex into a malloc'd buffer; NULL on bad hex. */
unsigned char *cf_test_unhex(const char *hex, size_t *len);

#define CHECK(cond)							\
	do {								\
		if (!(cond)) {						\
			cf_test_fail(__FILE__, __LINE__, "%s", #cond);	\
			return;						\
		}							\
	} while (0)

/* Checks an int-returning call against an expected value. */
#define CHECK_RC(expr, want)						\
	do {								\
		long long got_ = (long long)(expr);			\
		long long want_ = (long long)(want);			\
		if (got_ != want_) {					\
			cf_test_fail(__FILE__, __LINE__,		\
			    "%s: got %lld, want %lld", #expr, got_, want_); \
			return;						\
		}							\
	} while (0)

#define CF_TEST(name) { #name, name }
#define CF_TEST_MAIN(cases)						\
	int main(int argc, char **argv)					\
	{								\
		return cf_test_run(cases, sizeof(cases) / sizeof(cases[0]), \
		    argc, argv);					\
	}

#endif /* CF_TEST_H */

#ifndef CF_TEST_NO_KEYSTORE
#include "cf_keystore.h"
/*
 * Creates a coffer home under the case's scratch directory with a file
 * KMS whose Argon2id cost is the minimum (tests only) and a 0600
 * passphrase file holding pass.  Returns the home path (static buffer).
 */
const char *cf_test_home(const char *pass);
/* Rewrites the passphrase file of the home made by cf_test_home. */
void cf_test_set_pass(const char *pass);
#endif
