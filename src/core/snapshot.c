#include "core/snapshot.h"

#include <stddef.h>

void snap_obj_init(struct snap_obj *o, void (*destroy)(struct snap_obj *o))
{
	atomic_init(&o->refs, 1);
	o->revision = 0;
	o->destroy = destroy;
}

struct snap_obj *snap_obj_ref(struct snap_obj *o)
{
	atomic_fetch_add_explicit(&o->refs, 1, memory_order_relaxed);
	return o;
}

void snap_obj_unref(struct snap_obj *o)
{
	if (!o)
		return;
	if (atomic_fetch_sub_explicit(&o->refs, 1, memory_order_acq_rel) == 1)
		o->destroy(o);
}

void snapshot_init(struct snapshot *s)
{
	atomic_init(&s->cur, NULL);
	atomic_init(&s->revision, 0);
	pthread_mutex_init(&s->lock, NULL);
}

void snapshot_release(struct snapshot *s)
{
	snap_obj_unref(atomic_exchange(&s->cur, NULL));
	pthread_mutex_destroy(&s->lock);
}

uint64_t snapshot_publish(struct snapshot *s, struct snap_obj *o)
{
	struct snap_obj *old;
	uint64_t rev;

	pthread_mutex_lock(&s->lock);
	rev = atomic_load(&s->revision) + 1;
	o->revision = rev;
	old = atomic_exchange_explicit(&s->cur, o, memory_order_acq_rel);
	atomic_store_explicit(&s->revision, rev, memory_order_release);
	pthread_mutex_unlock(&s->lock);
	snap_obj_unref(old);
	return rev;
}

int snapshot_acquire(struct snapshot *s, struct snap_obj **held)
{
	struct snap_obj *cur;

	/* fast path: nothing was published since we took our reference */
	if (*held && (*held)->revision == atomic_load_explicit(&s->revision, memory_order_acquire))
		return 0;
	pthread_mutex_lock(&s->lock);
	cur = atomic_load_explicit(&s->cur, memory_order_acquire);
	if (cur == *held) {
		pthread_mutex_unlock(&s->lock);
		return 0;
	}
	if (cur)
		snap_obj_ref(cur);
	pthread_mutex_unlock(&s->lock);
	snap_obj_unref(*held);
	*held = cur;
	return 1;
}
