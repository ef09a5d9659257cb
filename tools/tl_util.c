/*
 * tl_util.c - what every coffer subcommand needs: opening the home,
 * printing errors and JSON, and asking for a passphrase on the terminal
 * with echo off (never through argv or an environment value).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <sodium.h>

#include "tl_int.h"

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

int
tl_prompt_passphrase(void *arg, const char *kms_name, int confirm, char *buf,
    size_t cap, size_t *len)
{
	struct termios old, quiet;
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
	tcsetattr(fd, TCSAFLUSH, &quiet);
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
	tcsetattr(fd, TCSAFLUSH, &old);
	close(fd);
	if (rc < 0) {
		sodium_memzero(buf, cap);
		*len = 0;
	}
	return rc;
}
