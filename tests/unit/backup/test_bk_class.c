/*
 * test_bk_class.c - data classes (docs/retention.md, Data classes):
 * pattern lists and matching against a table worked out by hand from
 * the documented rules, the rewrite of a tree without a class (on a real
 * local repository: the class's files are gone, the rest and unchanged
 * subtrees keep their ids, nothing is added when nothing matches), the
 * copy of a class into a repository with other keys (the data reads back
 * equal there), and change detection that ignores access times only.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bk_test.h"

static const unsigned char tenant_a[16] = { 0xc1, 0xc2 };
static const unsigned char tenant_b[16] = { 0xd1, 0xd2 };

/* ---- patterns ----------------------------------------------------------- */

static void
class_patterns(void)
{
	static const struct {
		const char *pats, *path;
		int want;
	} t[] = {
		{ "billing/**", "billing", 1 },
		{ "billing/**", "billing/inv.txt", 1 },
		{ "billing/**", "billing/2026/01/inv.txt", 1 },
		{ "billing/**", "billingx", 0 },
		{ "billing/**", "x/billing/inv.txt", 0 },
		{ "billing", "billing/inv.txt", 1 },
		{ "/logs/**", "logs/a", 1 },
		{ "logs/**, cache/**", "cache/x/y", 1 },
		{ "logs/**, cache/**", "docs/readme", 0 },
		{ "**/*.log", "a/b/c.log", 1 },
		{ "**/*.log", "c.log", 1 },
		{ "**/*.log", "a/c.txt", 0 },
		{ "cache/*.tmp", "cache/a.tmp", 1 },
		{ "cache/*.tmp", "cache/d/a.tmp", 0 },
		{ "cache/*.tmp", "cache/x.tmp/y", 1 },
		{ "a/**/z", "a/z", 1 },
		{ "a/**/z", "a/b/c/z", 1 },
		{ "a/**/z", "a/b/c/y", 0 },
		{ "inv-[0-9]*", "inv-7.pdf", 1 },
		{ "inv-[0-9]*", "inv-x.pdf", 0 },
		{ "**", "anything/at/all", 1 },
		{ "**", "", 0 },		/* the root never matches */
		{ "*", "/", 0 },
	};
	static const struct {
		const char *pats, *path;
		int want;
	} mc[] = {
		{ "logs/**", "", 1 },
		{ "logs/**", "logs", 1 },
		{ "logs/**", "logs/a/b", 1 },
		{ "logs/**", "docs", 0 },
		{ "logs/**", "logsx", 0 },
		{ "logs/**, cache/**", "cache", 1 },
		{ "a/*/c", "a", 1 },
		{ "a/*/c", "a/x", 1 },
		{ "a/*/c", "a/x/c", 1 },
		{ "a/*/c", "a/x/y", 0 },
		{ "a/*/c", "b", 0 },
		{ "**/*.log", "any/where", 1 },
		{ "a/**/z", "a/b", 1 },
		{ "a/**/z", "b/a", 0 },
	};
	struct cf_bk_class c;
	char many[4096];
	size_t i;

	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		memset(&c, 0, sizeof(c));
		CHECK_RC(cf_bk_class_paths(&c, t[i].pats), 0);
		if (cf_bk_class_match(&c, t[i].path) != t[i].want)
			cf_test_fail(__FILE__, __LINE__, "'%s' on '%s': want "
			    "%d", t[i].pats, t[i].path, t[i].want);
	}
	/* Directories below which something may match. */
	for (i = 0; i < sizeof(mc) / sizeof(mc[0]); i++) {
		memset(&c, 0, sizeof(c));
		CHECK_RC(cf_bk_class_paths(&c, mc[i].pats), 0);
		if (cf_bk_class_may_contain(&c, mc[i].path) != mc[i].want)
			cf_test_fail(__FILE__, __LINE__, "'%s' below '%s': "
			    "want %d", mc[i].pats, mc[i].path, mc[i].want);
	}
	CHECK_RC(cf_bk_class_paths(&c, ""), -EINVAL);
	CHECK_RC(cf_bk_class_paths(&c, " , ,"), -EINVAL);
	CHECK_RC(cf_bk_class_paths(&c, "/"), -EINVAL);
	CHECK_RC(cf_bk_class_paths(&c, "**/**/a/**/**"), 0);
	CHECK(strcmp(c.patterns[0], "**/a/**") == 0);
	CHECK_RC(cf_bk_class_paths(&c, "**/a/**/b/**/c/**/d/**"), -EINVAL);
	CHECK_RC(cf_bk_class_paths(&c, "a, b ,c"), 0);
	CHECK(c.npatterns == 3 && strcmp(c.patterns[1], "b") == 0);
	many[0] = '\0';
	for (i = 0; i < 17; i++)
		strcat(many, "x,");	/* checksrc:allow (bounded, test) */
	CHECK_RC(cf_bk_class_paths(&c, many), -EINVAL);
	memset(many, 'a', 300);
	many[300] = '\0';
	CHECK_RC(cf_bk_class_paths(&c, many), -EINVAL);
}

/* ---- trees in a real repository ----------------------------------------- */

static struct cf_bk_repo *
repo(const char *tag, struct cf_bk_keys *k, const unsigned char *tenant)
{
	struct cf_bk_store *s = NULL;
	struct cf_bk_repo *r = NULL;
	char url[4096];

	snprintf(url, sizeof(url), "file://%s/%s", cf_test_tmpdir(), tag);
	if (cf_bk_store_open_url(&s, url, CF_BK_STORE_CREATE) < 0)
		return NULL;
	if (cf_bk_repo_init(&r, s, k, tenant) < 0) {
		cf_bk_store_free(s);
		return NULL;
	}
	return r;
}

/* A file node of data (one blob) added through w. */
static int
file_node(struct cf_bk_writer *w, struct cf_bk_node *n, struct cf_bk_item *it,
    const char *name, const char *data, int64_t mtime)
{
	memset(n, 0, sizeof(*n));
	memset(it, 0, sizeof(*it));
	n->type = CF_BK_NODE_FILE;
	n->mode = 0644;
	n->name = name;
	n->size = strlen(data);
	n->mtime = n->ctime = mtime;
	n->atime = mtime;
	n->items = it;
	n->nitems = 1;
	return cf_bk_writer_add(w, CF_BK_BLOB_DATA, data, strlen(data), it->id);
}

static void
dir_node(struct cf_bk_node *n, const char *name, const unsigned char *sub)
{
	memset(n, 0, sizeof(*n));
	n->type = CF_BK_NODE_DIR;
	n->mode = 0755;
	n->name = name;
	memcpy(n->subtree, sub, CF_BK_ID_BYTES);
}

/*
 * root { billing/ { inv.txt }, logs/ { app.log }, readme }; atime of
 * readme and log_mtime of app.log as given.
 */
static int
build(struct cf_bk_writer *w, int64_t readme_atime, int64_t log_mtime,
    unsigned char root[CF_BK_ID_BYTES])
{
	struct cf_bk_node n[3];
	struct cf_bk_item it[3];
	struct cf_bk_tree t = { n, 1, NULL };
	unsigned char billing[32], logs[32];
	int rc;

	rc = file_node(w, &n[0], &it[0], "inv.txt", "invoice 1\n", 100);
	if (rc == 0)
		rc = cf_bk_writer_add_tree(w, &t, billing);
	if (rc == 0)
		rc = file_node(w, &n[0], &it[0], "app.log", "log line\n",
		    log_mtime);
	if (rc == 0)
		rc = cf_bk_writer_add_tree(w, &t, logs);
	if (rc < 0)
		return rc;
	dir_node(&n[0], "billing", billing);
	dir_node(&n[1], "logs", logs);
	rc = file_node(w, &n[2], &it[2], "readme", "read me\n", 100);
	n[2].atime = readme_atime;
	t.count = 3;
	if (rc == 0)
		rc = cf_bk_writer_add_tree(w, &t, root);
	if (rc == 0)
		rc = cf_bk_writer_flush(w);
	return rc;
}

static int
drop_class(void *arg, const char *path, const struct cf_bk_node *n)
{
	(void)n;
	return cf_bk_class_match(arg, path);
}

/* Drops files of class arg with mtime < 150 (ns); 2: dirs it cannot hold. */
static int
drop_old(void *arg, const char *path, const struct cf_bk_node *n)
{
	if (n->type == CF_BK_NODE_DIR)
		return cf_bk_class_may_contain(arg, path) ? 0 : 2;
	return cf_bk_class_match(arg, path) && n->mtime < 150;
}

static void
class_trees(void)
{
	struct cf_bk_keys *ka = bkt_keys_x(0x40), *kb = bkt_keys_x(0x60);
	struct cf_bk_repo *ra = repo("class-a", ka, tenant_a);
	struct cf_bk_repo *rb = repo("class-b", kb, tenant_b);
	struct cf_bk_writer *w = NULL, *wb = NULL;
	struct cf_bk_filter_stats st;
	struct cf_bk_class logs, billing, none;
	struct cf_bk_tree *t = NULL, *sub = NULL;
	unsigned char root[32], atime2[32], mtime2[32], out[32], copy[32];
	unsigned char copy2[32];
	struct cf_bk_copy_memo *memo = NULL;
	unsigned char *buf = NULL;
	size_t len = 0;

	CHECK(ra != NULL && rb != NULL);
	if (ra == NULL || rb == NULL)
		goto out;
	memset(&logs, 0, sizeof(logs));
	memset(&billing, 0, sizeof(billing));
	memset(&none, 0, sizeof(none));
	CHECK_RC(cf_bk_class_paths(&logs, "logs/**"), 0);
	CHECK_RC(cf_bk_class_paths(&billing, "billing/**"), 0);
	CHECK_RC(cf_bk_class_paths(&none, "tmp/**"), 0);
	CHECK_RC(cf_bk_writer_new(&w, ra, 0), 0);
	CHECK_RC(build(w, 100, 100, root), 0);
	CHECK_RC(build(w, 999, 100, atime2), 0);
	CHECK_RC(build(w, 100, 200, mtime2), 0);

	/* Change detection: only access times are ignored. */
	CHECK(memcmp(root, atime2, 32) != 0);
	CHECK_RC(cf_bk_tree_changed(ra, root, root), 0);
	CHECK_RC(cf_bk_tree_changed(ra, root, atime2), 0);
	CHECK_RC(cf_bk_tree_changed(ra, root, mtime2), 1);	/* nested */

	/* A class not in the tree: same id, nothing dropped. */
	CHECK_RC(cf_bk_tree_filter(w, root, drop_class, &none, out, &st), 0);
	CHECK(memcmp(out, root, 32) == 0 && st.files == 0);
	/* Without logs: billing and readme stay, billing's id too. */
	CHECK_RC(cf_bk_tree_filter(w, root, drop_class, &logs, out, &st), 0);
	CHECK(memcmp(out, root, 32) != 0);
	CHECK(st.files == 1 && st.bytes == strlen("log line\n"));
	CHECK_RC(cf_bk_writer_flush(w), 0);
	CHECK_RC(cf_bk_repo_tree_load(ra, out, &t), 0);
	if (t != NULL) {
		CHECK(t->count == 2);
		CHECK(strcmp(t->nodes[0].name, "billing") == 0);
		CHECK(strcmp(t->nodes[1].name, "readme") == 0);
		cf_bk_tree_free(t);
		t = NULL;
	}

	/* Per file (mtime): app.log goes, logs/ stays, billing/ is not
	 * searched; a tree whose log is newer is left as it is. */
	CHECK_RC(cf_bk_tree_filter(w, root, drop_old, &logs, out, &st), 0);
	CHECK(memcmp(out, root, 32) != 0 && st.files == 1);
	CHECK_RC(cf_bk_writer_flush(w), 0);
	CHECK_RC(cf_bk_repo_tree_load(ra, out, &t), 0);
	if (t != NULL) {
		struct cf_bk_tree *lt = NULL;

		CHECK(t->count == 3 && strcmp(t->nodes[1].name, "logs") == 0);
		CHECK_RC(cf_bk_repo_tree_load(ra, t->nodes[1].subtree, &lt), 0);
		CHECK(lt != NULL && lt->count == 0);
		cf_bk_tree_free(lt);
		cf_bk_tree_free(t);
		t = NULL;
	}
	CHECK_RC(cf_bk_tree_filter(w, mtime2, drop_old, &logs, out, &st), 0);
	CHECK(memcmp(out, mtime2, 32) == 0 && st.files == 0);

	/* Copy billing into repository b (other keys): the data reads. */
	CHECK_RC(cf_bk_writer_new(&wb, rb, 0), 0);
	CHECK_RC(cf_bk_copy_memo_new(&memo), 0);
	CHECK_RC(cf_bk_tree_copy_class(ra, wb, root, &billing, memo, copy,
	    &st), 0);
	CHECK(st.files == 1 && st.bytes == strlen("invoice 1\n"));
	/* Again through the memo: same copy, same counts. */
	CHECK_RC(cf_bk_tree_copy_class(ra, wb, mtime2, &billing, memo, copy2,
	    &st), 0);
	CHECK(memcmp(copy, copy2, 32) == 0);
	CHECK(st.files == 1 && st.bytes == strlen("invoice 1\n"));
	CHECK_RC(cf_bk_writer_flush(wb), 0);
	CHECK_RC(cf_bk_repo_tree_load(rb, copy, &t), 0);
	if (t != NULL) {
		CHECK(t->count == 1 &&
		    strcmp(t->nodes[0].name, "billing") == 0);
		CHECK_RC(cf_bk_repo_tree_load(rb, t->nodes[0].subtree, &sub),
		    0);
	}
	if (sub != NULL) {
		CHECK(sub->count == 1 && sub->nodes[0].nitems == 1);
		CHECK_RC(cf_bk_repo_blob_load(rb, CF_BK_BLOB_DATA,
		    sub->nodes[0].items[0].id, &buf, &len), 0);
		CHECK(len == 10 && buf != NULL &&
		    memcmp(buf, "invoice 1\n", 10) == 0);
	}
	/* The source's tree is not in b: nothing is shared. */
	CHECK(!cf_bk_repo_has_blob(rb, CF_BK_BLOB_TREE, root));
	/* A class with nothing in the tree copies an empty root. */
	CHECK_RC(cf_bk_tree_copy_class(ra, wb, root, &none, NULL, copy, &st),
	    0);
	CHECK(st.files == 0);
out:
	cf_bk_copy_memo_free(memo);
	free(buf);
	cf_bk_tree_free(sub);
	cf_bk_tree_free(t);
	cf_bk_writer_free(w);
	cf_bk_writer_free(wb);
	cf_bk_repo_free(ra);
	cf_bk_repo_free(rb);
	cf_bk_keys_free(ka);
	cf_bk_keys_free(kb);
}

static const struct cf_test_case cases[] = {
	CF_TEST(class_patterns),
	CF_TEST(class_trees),
};

CF_TEST_MAIN(cases)
