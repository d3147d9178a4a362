/*
 * snapshot.h - an immutable, refcounted object published by one thread and
 * read by many (the running configuration, routing tables).
 *
 * The control thread builds a new object, then snapshot_publish() swaps it in
 * atomically.  A worker calls snapshot_acquire() once at the start of a loop
 * turn (cheap: one atomic load when nothing changed, because the worker keeps
 * its reference across turns) and uses that object for the whole turn; a
 * request in flight keeps the reference it started with.
 */
#ifndef CORE_SNAPSHOT_H
#define CORE_SNAPSHOT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

struct snap_obj {
	atomic_uint refs;
	uint64_t revision;
	void (*destroy)(struct snap_obj *o);
};

struct snapshot {
	_Atomic(struct snap_obj *) cur;
	atomic_uint_fast64_t revision;
	/* held only while swapping or taking a new reference, so a reader can
	 * never ref an object whose last reference is being dropped */
	pthread_mutex_t lock;
};

/* Initialises o with one reference owned by the caller. */
void snap_obj_init(struct snap_obj *o, void (*destroy)(struct snap_obj *o));
struct snap_obj *snap_obj_ref(struct snap_obj *o);
/* Drops a reference; the last one calls destroy. NULL is accepted. */
void snap_obj_unref(struct snap_obj *o);

void snapshot_init(struct snapshot *s);
/* Drops the published object (call after every reader stopped). */
void snapshot_release(struct snapshot *s);

/*
 * Publishes o, stealing the caller's reference, and assigns it the next
 * revision number (returned).  The previously published object is unref'd.
 */
uint64_t snapshot_publish(struct snapshot *s, struct snap_obj *o);

/*
 * Makes *held the currently published object.  If *held is already current
 * nothing happens; otherwise the old one is unref'd and a new reference taken.
 * Returns 1 if *held changed, 0 otherwise.  *held may start as NULL.
 */
int snapshot_acquire(struct snapshot *s, struct snap_obj **held);

#endif
