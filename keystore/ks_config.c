/*
 * ks_config.c - coffer.conf, an INI file parsed by inih.
 *
 * The configuration is a flat list of (section, key, value) triples kept
 * in file order; lookups are linear, which is fine for the few dozen
 * entries a real file has.  Limits (docs/format/home.md): 1 MiB of text,
 * 4096 entries, 199-byte lines, 255-byte names, 4095-byte values (the
 * last two only reachable with an inih built with a larger line buffer).  A key repeated within a
 * section is an error, not a silent override.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ini.h>

#include "ks_int.h"

#define CONF_MAX_BYTES (1024 * 1024)
#define CONF_MAX_ENTRIES 4096
#define CONF_MAX_NAME 255
#define CONF_MAX_VALUE 4095
#define CONF_MAX_LINE 199	/* inih's INI_MAX_LINE (200) less the NUL */

struct conf_entry {
	char *section;
	char *key;
	char *value;
};

struct cf_ks_config {
	struct conf_entry *e;
	size_t n, cap;
	int err;		/* first error seen by the handler */
	int errline;
};

static int
conf_add(void *user, const char *section, const char *key, const char *value)
{
	struct cf_ks_config *cfg = user;
	struct conf_entry *ne;
	size_t i;

	if (cfg->err != 0)
		return 0;
	if (strlen(section) > CONF_MAX_NAME || strlen(key) > CONF_MAX_NAME ||
	    strlen(value) > CONF_MAX_VALUE || key[0] == '\0') {
		cfg->err = -EPROTO;
		return 0;
	}
	for (i = 0; i < cfg->n; i++) {
		if (strcmp(cfg->e[i].section, section) == 0 &&
		    strcmp(cfg->e[i].key, key) == 0) {
			cfg->err = -EEXIST;
			return 0;
		}
	}
	if (cfg->n == CONF_MAX_ENTRIES) {
		cfg->err = -E2BIG;
		return 0;
	}
	if (cfg->n == cfg->cap) {
		size_t nc = cfg->cap ? cfg->cap * 2 : 16;

		ne = realloc(cfg->e, nc * sizeof(*ne));
		if (ne == NULL) {
			cfg->err = -ENOMEM;
			return 0;
		}
		cfg->e = ne;
		cfg->cap = nc;
	}
	ne = &cfg->e[cfg->n];
	ne->section = strdup(section);
	ne->key = strdup(key);
	ne->value = strdup(value);
	if (ne->section == NULL || ne->key == NULL || ne->value == NULL) {
		free(ne->section);
		free(ne->key);
		free(ne->value);
		cfg->err = -ENOMEM;
		return 0;
	}
	cfg->n++;
	return 1;
}

/*
 * inih (release 55, INI_MAX_LINE 200) reads a line into a 200-byte buffer
 * and reports a longer one as a syntax error on the line after it.  Find
 * it first and name the right line.  [KS-CONF-2]
 */
static int
check_lines(const char *text, size_t len)
{
	const char *p = text, *nl, *end = text + len;
	size_t n;
	int line = 1;

	while (p < end) {
		nl = memchr(p, '\n', (size_t)(end - p));
		n = (size_t)((nl != NULL ? nl : end) - p);
		if (n > CONF_MAX_LINE)
			return ks_err(-EPROTO, "configuration: line %d is too "
			    "long (%zu bytes, max %d)", line, n,
			    CONF_MAX_LINE);
		if (nl == NULL)
			break;
		p = nl + 1;
		line++;
	}
	return 0;
}

int
cf_ks_config_parse(struct cf_ks_config **out, const char *text, size_t len)
{
	struct cf_ks_config *cfg = NULL;
	char *copy = NULL;
	int rc = -ENOMEM, line;

	*out = NULL;
	if (len > CONF_MAX_BYTES)
		return ks_err(-EFBIG, "configuration is larger than 1 MiB");
	/* NUL bytes would silently cut the text short: refuse them. */
	if (memchr(text, '\0', len) != NULL)
		return ks_err(-EPROTO, "configuration contains a NUL byte");
	cfg = calloc(1, sizeof(*cfg));
	copy = malloc(len + 1);
	if (cfg == NULL || copy == NULL)
		goto out;
	memcpy(copy, text, len);
	copy[len] = '\0';
	rc = check_lines(copy, len);
	if (rc < 0)
		goto out;
	rc = -ENOMEM;
	line = ini_parse_string(copy, conf_add, cfg);
	if (cfg->err == -ENOMEM)
		goto out;
	if (cfg->err == -EEXIST) {
		rc = ks_err(-EPROTO, "configuration: a key is set twice in "
		    "one section");
		goto out;
	}
	if (cfg->err != 0 || line != 0) {
		rc = ks_err(-EPROTO, "configuration: syntax error or "
		    "over-long entry near line %d", line > 0 ? line : 0);
		goto out;
	}
	*out = cfg;
	cfg = NULL;
	rc = 0;
out:
	free(copy);
	cf_ks_config_free(cfg);
	return rc;
}

int
ks_config_load_at(struct cf_ks_config **out, int dirfd, const char *name,
    const char *shown)
{
	unsigned char *buf = NULL;
	size_t len = 0;
	int rc;

	*out = NULL;
	rc = ks_read_file(dirfd, name, CONF_MAX_BYTES, &buf, &len);
	if (rc == -ENOENT)
		return cf_ks_config_parse(out, "", 0);
	if (rc < 0)
		return ks_err(rc, "cannot read configuration %s: %s", shown,
		    strerror(-rc));
	rc = cf_ks_config_parse(out, (const char *)buf, len);
	free(buf);
	return rc;
}

int
cf_ks_config_load(struct cf_ks_config **out, const char *path)
{
	return ks_config_load_at(out, AT_FDCWD, path, path);
}

void
cf_ks_config_free(struct cf_ks_config *cfg)
{
	size_t i;

	if (cfg == NULL)
		return;
	for (i = 0; i < cfg->n; i++) {
		free(cfg->e[i].section);
		free(cfg->e[i].key);
		free(cfg->e[i].value);
	}
	free(cfg->e);
	free(cfg);
}

const char *
cf_ks_config_get(const struct cf_ks_config *cfg, const char *section,
    const char *key)
{
	size_t i;

	if (cfg == NULL)
		return NULL;
	for (i = 0; i < cfg->n; i++)
		if (strcmp(cfg->e[i].section, section) == 0 &&
		    strcmp(cfg->e[i].key, key) == 0)
			return cfg->e[i].value;
	return NULL;
}
