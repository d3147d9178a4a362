/*
 * state.h - the one path every control-plane change takes (SPEC 9,
 * docs/architecture.md "The state path"):
 *
 *   validate (the owning module) -> state_commit(): documents and their
 *   audit events in ONE store transaction -> publish the new revision to the
 *   subscribers of each document's kind (proxy traffic, flags, engine).
 *
 * Changes committed by another fleet node arrive through state_apply() and
 * reach the same subscribers, so a module applies local and remote changes
 * with the same code.  Modules above (API handlers, the rollout engine)
 * call down into the owning module, which calls state_commit(); nothing
 * calls up into main.
 *
 * Threading: control thread only, like the store handle it wraps.
 * Subscribers run synchronously inside state_commit()/state_apply(), after
 * the transaction committed; they must not call state_commit() themselves
 * (that returns -EBUSY) and must not fail: the change is already durable.
 *
 * Errors: 0, or ERR_CONFLICT (a document's expected revision did not
 * match), ERR_UNAVAILABLE (the store cannot be reached), ERR_STORE (the
 * store refused: see state_errmsg()), -EINVAL, -E2BIG, -ENOMEM, -EBUSY.  On
 * any error nothing was written and nobody was told.
 */
#ifndef STATE_STATE_H
#define STATE_STATE_H

#include <stddef.h>
#include <stdint.h>

struct store;

/* Where a published change comes from. */
enum state_origin {
	STATE_LOCAL,  /* committed by this process through state_commit() */
	STATE_REMOTE, /* committed by another node; see state_apply() */
};

/* One document write of a change. */
struct state_doc {
	const char *kind;   /* "service", "mirror", "faults", "flag", "rollout", ... */
	const char *name;   /* the document's name within its kind */
	const char *json;   /* the new document text; NULL deletes the document */
	int64_t expect_rev; /* STORE_REV_ANY, STORE_REV_ABSENT or the revision read */
	/*
	 * Optional: the committing module's already-built form of the new
	 * document (a parsed flag, say), handed as is to the subscribers of a
	 * local commit so the owner need not parse its own write again.
	 * Borrowed; NULL for remote changes.
	 */
	void *prepared;
};

/* One audit event of a change. */
struct state_event {
	const char *actor;   /* token name, or "canaryd" for the daemon's own decisions */
	const char *kind;    /* dotted kind, e.g. "flag.updated", "rollout.step" */
	const char *subject; /* e.g. "flag/new-checkout"; may be NULL */
	const char *details; /* JSON object text; NULL means {} */
	int64_t *id_out;     /* optional: receives the event's id */
};

/* What a subscriber is told: one document of a committed change. */
struct state_update {
	const char *kind;
	const char *name;
	const char *json; /* the document now (NULL: deleted) */
	int64_t rev;      /* the revision this write got */
	enum state_origin origin;
	void *prepared; /* struct state_doc.prepared of a local commit, else NULL */
};

typedef void (*state_fn)(void *arg, const struct state_update *u);

/*
 * A check run inside every transaction of state_commit() and state_event(),
 * just before commit (fleet mode: the leader's term, so a node that lost
 * leadership cannot commit a stale decision).  Returns 0 to commit, or an
 * error (ERR_CONFLICT for "not the leader any more") to roll back.
 */
typedef int (*state_fence_fn)(void *arg, struct store *st);

struct state;

/* A state layer over st (borrowed; must outlive it).  NULL when out of memory. */
struct state *state_new(struct store *st);

/* Frees s and its subscriptions (the store is untouched).  NULL is a no-op. */
void state_free(struct state *s);

/* The store, for reads (documents at load, event listings). */
struct store *state_store(const struct state *s);

/*
 * Calls fn(arg, update) for every document of kind published from now on,
 * in subscription order.  The same (kind, fn, arg) twice is -EEXIST.
 */
int state_subscribe(struct state *s, const char *kind, state_fn fn, void *arg);

/* Removes a subscription; -ENOENT when there is none. */
int state_unsubscribe(struct state *s, const char *kind, state_fn fn, void *arg);

/*
 * Sets the fence checked before every commit (NULL: none).  fn is borrowed.
 */
void state_set_fence(struct state *s, state_fence_fn fn, void *arg);

/*
 * Commits ndocs documents and nevs events in one transaction (either all
 * of them or none), then publishes each document to its kind's subscribers
 * in array order.  ndocs or nevs may be 0 (not both).  The revision of the
 * last document write goes to *rev_out (may be NULL; the current revision
 * when ndocs is 0).  Errors as the header says.
 */
int state_commit(struct state *s, const struct state_doc *docs, size_t ndocs,
                 const struct state_event *evs, size_t nevs, int64_t *rev_out);

/* One event on its own (a verdict, an interval): state_commit(s, NULL, 0, ev, 1, NULL). */
int state_event(struct state *s, const struct state_event *ev);

/*
 * Publishes a change that is already durable (committed by another node
 * and read back from the store) to the subscribers of u->kind, exactly as
 * a local commit's; origin must be STATE_REMOTE.  Returns 0, or -EBUSY
 * when called from inside a subscriber.
 */
int state_apply(struct state *s, const struct state_update *u);

/* The revision of the last change committed or applied through s (0 before any). */
int64_t state_revision(const struct state *s);

/*
 * Copies the description of the last failure (store message, or which
 * document conflicted) into buf (NUL-terminated) and returns buf.
 */
const char *state_errmsg(const struct state *s, char *buf, size_t len);

/* Maps a store return code to the err.h code state functions return. */
int state_err_of_store(int store_rc);

#endif
