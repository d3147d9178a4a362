/*
 * arena.h - bump allocation for objects that die together (a routing table,
 * a request's parsed extras).  Blocks are malloc'd on demand and freed at
 * once by arena_release().  Not thread-safe; an arena has one owner.
 */
#ifndef CORE_ARENA_H
#define CORE_ARENA_H

#include <stddef.h>

#include "core/str.h"

struct arena_block;

struct arena {
	struct arena_block *head;
	size_t block_size;
};

void arena_init(struct arena *a, size_t block_size);
void arena_release(struct arena *a);
/* n bytes aligned for any object, zeroed; NULL on ENOMEM. */
void *arena_alloc(struct arena *a, size_t n);
/* A NUL-terminated copy of s (NULL stays NULL). */
char *arena_strdup(struct arena *a, const char *s);
char *arena_strndup(struct arena *a, const char *s, size_t n);

#endif
