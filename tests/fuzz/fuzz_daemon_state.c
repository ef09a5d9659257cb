/*
 * fuzz_daemon_state.c - libFuzzer target for coffer daemon's state file
 * (docs/format/daemon-state.md): tl_daemon_state_parse (tools/tl_daemon.c)
 * on any bytes, then what status does with a parsed state.
 *
 * Invariants: the parser gives 0, -EPROTO or -ENOMEM; every value it
 * accepts is within the documented limits; a parsed state dumps to JSON
 * that parses back to the same state, and judging it never overflows.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tl_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tl_daemon_state *st = NULL, *st2 = NULL;
	const struct tl_daemon_job *a, *b;
	char *text = NULL, why[64];
	size_t i, k;
	int rc;

	rc = tl_daemon_state_parse((const char *)data, size, &st);
	if (rc == -EPROTO || rc == -ENOMEM)
		return 0;
	if (rc != 0 || st == NULL)
		abort();
	text = tl_daemon_state_dump(st);
	if (text == NULL)
		goto out;
	if (tl_daemon_state_parse(text, strlen(text), &st2) != 0 ||
	    st2->n != st->n || st2->updated != st->updated)
		abort();
	for (i = 0; i < st->n; i++) {
		if (tl_daemon_state_find(st2, st->t[i].name) == NULL)
			abort();
		for (k = 0; k < TL_DJOBS; k++) {
			a = &st->t[i].job[k];
			b = &tl_daemon_state_find(st2, st->t[i].name)->job[k];
			if (a->failures < 0 || a->last_exit < 0 ||
			    a->last_exit > 255 || a->hold < 0 || a->hold > 1 ||
			    a->last_ok > TL_DAEMON_TIME_MAX)
				abort();
			/* A job never tried is not written out. */
			if ((a->last_try || a->last_ok) &&
			    memcmp(a, b, sizeof(*a)) != 0)
				abort();
		}
		if (tl_daemon_judge(st, st->t[i].name, why, sizeof(why)) > 2 ||
		    strlen(why) >= sizeof(why))
			abort();
	}
out:
	free(text);
	tl_daemon_state_free(st);
	tl_daemon_state_free(st2);
	return 0;
}
