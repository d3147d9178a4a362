/*
 * state.c - the one state path: commit documents and events in one store
 * transaction, then publish them to the subscribers of their kind.
 * See state.h.
 */
#include "state/state.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "store/store.h"

struct sub {
	char *kind;
	state_fn fn;
	void *arg;
};

struct state {
	struct store *st;
	struct sub *subs;
	size_t nsubs, capsubs;
	state_fence_fn fence;
	void *fence_arg;
	int64_t rev;
	int publishing; /* inside a subscriber: no nested commit */
	char errmsg[512];
};

struct state *state_new(struct store *st)
{
	struct state *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->st = st;
	if (store_revision(st, &s->rev))
		s->rev = 0;
	return s;
}

void state_free(struct state *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->nsubs; i++)
		free(s->subs[i].kind);
	free(s->subs);
	free(s);
}

struct store *state_store(const struct state *s)
{
	return s->st;
}

static long sub_find(const struct state *s, const char *kind, state_fn fn, void *arg)
{
	for (size_t i = 0; i < s->nsubs; i++)
		if (s->subs[i].fn == fn && s->subs[i].arg == arg && !strcmp(s->subs[i].kind, kind))
			return (long)i;
	return -1;
}

int state_subscribe(struct state *s, const char *kind, state_fn fn, void *arg)
{
	if (!kind || !*kind || !fn)
		return -EINVAL;
	if (sub_find(s, kind, fn, arg) >= 0)
		return -EEXIST;
	if (s->nsubs == s->capsubs) {
		size_t cap = s->capsubs ? s->capsubs * 2 : 8;
		struct sub *v = realloc(s->subs, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		s->subs = v;
		s->capsubs = cap;
	}
	s->subs[s->nsubs].kind = strdup(kind);
	if (!s->subs[s->nsubs].kind)
		return -ENOMEM;
	s->subs[s->nsubs].fn = fn;
	s->subs[s->nsubs].arg = arg;
	s->nsubs++;
	return 0;
}

int state_unsubscribe(struct state *s, const char *kind, state_fn fn, void *arg)
{
	long i = sub_find(s, kind, fn, arg);

	if (i < 0)
		return -ENOENT;
	free(s->subs[i].kind);
	memmove(&s->subs[i], &s->subs[i + 1], (s->nsubs - (size_t)i - 1) * sizeof(*s->subs));
	s->nsubs--;
	return 0;
}

void state_set_fence(struct state *s, state_fence_fn fn, void *arg)
{
	s->fence = fn;
	s->fence_arg = arg;
}

int state_err_of_store(int rc)
{
	switch (rc) {
	case 0:
		return 0;
	case STORE_ERR_CONFLICT:
		return ERR_CONFLICT;
	case STORE_ERR_NOTFOUND:
		return ERR_NOTFOUND;
	case STORE_ERR_UNAVAILABLE:
		return ERR_UNAVAILABLE;
	case STORE_ERR_JSON:
		return -EINVAL;
	case STORE_ERR_TXN:
	case STORE_ERR_SCHEMA:
	case STORE_ERR_BACKEND:
		return ERR_STORE;
	}
	return rc < 0 ? rc : ERR_STORE;
}

/* Publishes one document to its kind's subscribers. */
static void publish(struct state *s, const struct state_update *u)
{
	s->publishing = 1;
	/* a subscriber may not (un)subscribe: publishing walks a stable array */
	for (size_t i = 0; i < s->nsubs; i++)
		if (!strcmp(s->subs[i].kind, u->kind))
			s->subs[i].fn(s->subs[i].arg, u);
	s->publishing = 0;
}

/* Records why rc happened; returns the err.h code of rc. */
static int failed(struct state *s, int rc, const char *what)
{
	char m[400];

	store_errmsg(s->st, m, sizeof(m));
	if (m[0])
		snprintf(s->errmsg, sizeof(s->errmsg), "%s: %s", what, m);
	else
		snprintf(s->errmsg, sizeof(s->errmsg), "%s: %s", what, store_strerror(rc));
	return state_err_of_store(rc);
}

int state_commit(struct state *s, const struct state_doc *docs, size_t ndocs,
                 const struct state_event *evs, size_t nevs, int64_t *rev_out)
{
	int64_t *revs = NULL, rev = s->rev;
	int rc;

	if (s->publishing)
		return -EBUSY;
	if (!ndocs && !nevs)
		return -EINVAL;
	if (ndocs) {
		revs = calloc(ndocs, sizeof(*revs));
		if (!revs)
			return -ENOMEM;
	}
	s->errmsg[0] = '\0';
	rc = store_begin(s->st);
	if (rc) {
		rc = failed(s, rc, "cannot begin a transaction");
		goto out;
	}
	for (size_t i = 0; i < ndocs; i++) {
		const struct state_doc *d = &docs[i];

		if (d->json)
			rc = store_doc_put(s->st, d->kind, d->name, d->json, d->expect_rev,
			                   &revs[i]);
		else
			rc = store_doc_delete(s->st, d->kind, d->name, d->expect_rev, &revs[i]);
		if (rc == STORE_ERR_NOTFOUND && !d->json && d->expect_rev == STORE_REV_ANY) {
			rc = 0; /* deleting what is not there: nothing to write or publish */
			revs[i] = -1;
		}
		if (rc) {
			char what[STORE_NAME_MAX * 2 + 32];

			snprintf(what, sizeof(what), "document %s/%s", d->kind, d->name);
			rc = failed(s, rc, what);
			goto out_rollback;
		}
	}
	for (size_t i = 0; i < nevs; i++) {
		const struct state_event *e = &evs[i];

		rc =
		    store_event_append(s->st, e->actor, e->kind, e->subject, e->details, e->id_out);
		if (rc) {
			rc = failed(s, rc, "event");
			goto out_rollback;
		}
	}
	if (s->fence) {
		rc = s->fence(s->fence_arg, s->st);
		if (rc) {
			snprintf(s->errmsg, sizeof(s->errmsg), "fenced: %s", err_str(rc));
			goto out_rollback;
		}
	}
	rc = store_commit(s->st);
	if (rc) {
		rc = failed(s, rc, "commit");
		goto out;
	}
	for (size_t i = 0; i < ndocs; i++) {
		if (revs[i] < 0)
			continue;
		rev = revs[i];
		if (rev > s->rev)
			s->rev = rev;
		publish(s, &(struct state_update){.kind = docs[i].kind,
		                                  .name = docs[i].name,
		                                  .json = docs[i].json,
		                                  .rev = revs[i],
		                                  .origin = STATE_LOCAL,
		                                  .prepared = docs[i].prepared});
	}
	if (rev_out)
		*rev_out = rev;
	goto out;
out_rollback:
	store_rollback(s->st);
out:
	free(revs);
	return rc;
}

int state_event(struct state *s, const struct state_event *ev)
{
	return state_commit(s, NULL, 0, ev, 1, NULL);
}

int state_apply(struct state *s, const struct state_update *u)
{
	struct state_update copy;

	if (s->publishing)
		return -EBUSY;
	if (!u || !u->kind || !u->name)
		return -EINVAL;
	copy = *u;
	copy.origin = STATE_REMOTE;
	copy.prepared = NULL;
	if (copy.rev > s->rev)
		s->rev = copy.rev;
	publish(s, &copy);
	return 0;
}

int64_t state_revision(const struct state *s)
{
	return s->rev;
}

const char *state_errmsg(const struct state *s, char *buf, size_t len)
{
	if (len)
		snprintf(buf, len, "%s", s->errmsg);
	return buf;
}
