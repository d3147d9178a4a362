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

struct buf {
	char *data;
	size_t off;  /* start of unread bytes */
	size_t len;  /* end of bytes */
	size_t size; /* allocated */
	size_t cap;  /* hard limit on len - off */
};

/* Initialises an empty buffer that may hold at most cap bytes. */
void buf_init(struct buf *b, size_t cap);
/* Frees the storage; the buffer is empty and reusable afterwards. */
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

/* Appends n bytes.  Returns 0, or -ENOBUFS past the cap, or -ENOMEM. */
int buf_append(struct buf *b, const void *p, size_t n);
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
