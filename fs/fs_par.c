/*
 * fs_par.c - a second core for the blocks of one large request.
 *
 * The kernel sends a sequential writer's or reader's data one request at
 * a time and waits for each reply, so the daemon's other threads sit idle
 * while one thread seals or opens the 256 blocks of a 1 MiB request.
 * cf_fs_par_run() lets a helper thread share the range: both take chunks
 * of CF_FS_PAR_CHUNK blocks from a common counter until none is left, so
 * a helper that is slow to be scheduled (a busy machine) costs at most
 * the chunk it is working on, never half of the request.  There is one
 * helper: if another request is using it, the caller does the whole
 * range itself.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "fs_int.h"

#define CF_FS_PAR_CHUNK 16		/* blocks: 64 KiB */

struct cf_fs_par {
	pthread_mutex_t mu;
	pthread_cond_t work;		/* the helper waits for a job */
	pthread_cond_t done;		/* the caller waits for the helper */
	pthread_t th;
	int busy;			/* a caller owns the helper */
	int have;			/* a job the helper has not taken */
	int finished, stop;
	cf_fs_par_fn *fn;
	void *arg;
	size_t n;
	atomic_size_t next;		/* first block no one has taken */
	int rc;				/* the helper's result */
};

/* Takes chunks until none is left; the first negative result, or 0. */
static int
drain(struct cf_fs_par *p)
{
	size_t lo;
	int rc = 0, r;

	while ((lo = atomic_fetch_add(&p->next, CF_FS_PAR_CHUNK)) < p->n) {
		r = p->fn(p->arg, lo, lo + CF_FS_PAR_CHUNK < p->n ?
		    lo + CF_FS_PAR_CHUNK : p->n);
		if (r < 0 && rc == 0)
			rc = r;
	}
	return rc;
}

static void *
helper(void *arg)
{
	struct cf_fs_par *p = arg;
	int rc;

	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (!p->have && !p->stop)
			pthread_cond_wait(&p->work, &p->mu);
		if (p->stop)
			break;
		p->have = 0;
		pthread_mutex_unlock(&p->mu);
		rc = drain(p);
		pthread_mutex_lock(&p->mu);
		p->rc = rc;
		p->finished = 1;
		pthread_cond_signal(&p->done);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

int
cf_fs_par_new(struct cf_fs_par **out)
{
	struct cf_fs_par *p;
	int rc;

	*out = NULL;
	if (sysconf(_SC_NPROCESSORS_ONLN) < 2)
		return 0;		/* one core: nothing to gain */
	p = calloc(1, sizeof(*p));
	if (p == NULL)
		return -ENOMEM;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->work, NULL);
	pthread_cond_init(&p->done, NULL);
	atomic_init(&p->next, 0);
	rc = pthread_create(&p->th, NULL, helper, p);
	if (rc != 0) {
		pthread_cond_destroy(&p->done);
		pthread_cond_destroy(&p->work);
		pthread_mutex_destroy(&p->mu);
		free(p);
		return -rc;
	}
	*out = p;
	return 0;
}

void
cf_fs_par_free(struct cf_fs_par *p)
{
	if (p == NULL)
		return;
	pthread_mutex_lock(&p->mu);
	p->stop = 1;
	pthread_cond_signal(&p->work);
	pthread_mutex_unlock(&p->mu);
	pthread_join(p->th, NULL);
	pthread_cond_destroy(&p->done);
	pthread_cond_destroy(&p->work);
	pthread_mutex_destroy(&p->mu);
	free(p);
}

int
cf_fs_par_run(struct cf_fs_par *p, cf_fs_par_fn *fn, void *arg, size_t n)
{
	int rc, hrc = 0;

	if (p == NULL || n < CF_FS_PAR_MIN)
		return fn(arg, 0, n);
	pthread_mutex_lock(&p->mu);
	if (p->busy) {
		pthread_mutex_unlock(&p->mu);
		return fn(arg, 0, n);
	}
	p->busy = 1;
	p->fn = fn;
	p->arg = arg;
	p->n = n;
	atomic_store(&p->next, 0);
	p->finished = 0;
	p->have = 1;
	pthread_cond_signal(&p->work);
	pthread_mutex_unlock(&p->mu);

	rc = drain(p);

	pthread_mutex_lock(&p->mu);
	if (p->have) {
		p->have = 0;	/* never started: nothing of it to wait for */
	} else {
		while (!p->finished)
			pthread_cond_wait(&p->done, &p->mu);
		hrc = p->rc;
	}
	p->busy = 0;
	pthread_mutex_unlock(&p->mu);
	return rc < 0 ? rc : hrc;
}
