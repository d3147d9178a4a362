/*
 * buf.h - a growable byte buffer with a hard cap (curl's dynbuf).
 *
 * Bytes live in [data + off, data + len).  Consumed bytes are dropped from
 * the front by buf_consume(); the space is reclaimed lazily when appending.
 * Growing past cap fails with -ENOBUFS and leaves the buffer unchanged, so
 * every growable thing in canaryd has a bound and an error path.
 */
#ifndef CORE_BUF_H
#define CORE_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <string.h>

struct buf_pool;

struct buf {
	char *data;
	size_t off;            /* start of unread bytes */
	size_t len;            /* end of bytes */
	size_t size;           /* allocated */
	size_t cap;            /* hard limit on len - off */
	struct buf_pool *pool; /* where the storage comes from and goes back; NULL: malloc */
};

/*
 * A thread's cache of equal-sized storage blocks (HAProxy's per-thread
 * pools): a connection's buffers take a block when they first need room
 * and give it back when released, so a keep-alive request costs no
 * malloc/free (and glibc never trims and re-faults a worker's heap).
 * A zeroed struct is an empty pool.  Single thread: the owner's.  Bounded:
 * at most BUF_POOL_MAX free blocks are kept, the rest go back to free().
 * A buffer that outgrows a block leaves the pool (realloc) and is freed
 * normally when released.
 */
#define BUF_POOL_BLOCK 32768u /* what a 16 KiB read reserve grows an empty buf to */
#define BUF_POOL_MAX   512u   /* free blocks kept: 16 MiB of address space, few pages touched */

struct buf_pool {
	void *free[BUF_POOL_MAX];
	unsigned n;
	unsigned long taken, made; /* blocks handed out / of those, newly allocated */
};

/* Frees the pool's free blocks; the pool is empty and usable afterwards. */
void buf_pool_release(struct buf_pool *bp);

/* Initialises an empty buffer that may hold at most cap bytes. */
void buf_init(struct buf *b, size_t cap);
/*
 * Initialises an empty buffer whose storage comes from pool bp (NULL:
 * plain malloc, as buf_init).  bp must outlive b's storage: release b
 * before releasing the pool.
 */
void buf_init_pooled(struct buf *b, size_t cap, struct buf_pool *bp);
/* Frees the storage (back to its pool, if any); the buffer is empty and reusable afterwards. */
void buf_release(struct buf *b);
/* Drops all bytes, keeps the storage. */
void buf_reset(struct buf *b);

static inline size_t buf_used(const struct buf *b)
{
	return b->len - b->off;
}

static inline char *buf_head(const struct buf *b)
{
	/* an empty buffer may have no storage yet: NULL + 0 is undefined */
	return b->data ? b->data + b->off : b->data;
}

/* buf_append() when the bytes do not fit the storage as it is. */
int buf_append_slow(struct buf *b, const void *p, size_t n);

/* Appends n bytes.  Returns 0, or -ENOBUFS past the cap, or -ENOMEM. */
static inline int buf_append(struct buf *b, const void *p, size_t n)
{
	/* the common case inline: room left (and its hidden NUL), under the cap */
	if (n && b->len + n < b->size && b->len - b->off + n <= b->cap) {
		memcpy(b->data + b->len, p, n);
		b->len += n;
		return 0;
	}
	return buf_append_slow(b, p, n);
}
int buf_append_str(struct buf *b, const char *s);
/* printf-style append.  Same returns as buf_append. */
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vprintf(struct buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

/*
 * Makes room for at least n more bytes and returns a pointer to write them
 * to; call buf_commit() with the count written.  NULL past the cap / ENOMEM.
 */
char *buf_reserve(struct buf *b, size_t n);
void buf_commit(struct buf *b, size_t n);

/* Appends v in decimal / in lower-case hex (no 0x).  Same returns as buf_append. */
int buf_append_u64(struct buf *b, unsigned long long v);
int buf_append_hex(struct buf *b, unsigned long long v);
/* Appends a string literal without strlen(). */
#define buf_append_lit(b, lit) buf_append((b), "" lit, sizeof(lit) - 1)

/* Drops n bytes from the front. */
void buf_consume(struct buf *b, size_t n);

/* Returns a NUL-terminated view of the contents (appends a hidden NUL). */
const char *buf_cstr(struct buf *b);

#endif
