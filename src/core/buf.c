#include "core/buf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Blocks in a pool are poisoned under ASan: a use after release is still caught. */
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define POOL_POISON(p, n)   ASAN_POISON_MEMORY_REGION((p), (n))
#define POOL_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POOL_POISON(p, n)   ((void)(p), (void)(n))
#define POOL_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

void buf_pool_release(struct buf_pool *bp)
{
	while (bp->n > 0) {
		void *p = bp->free[--bp->n];

		POOL_UNPOISON(p, BUF_POOL_BLOCK);
		free(p);
	}
}

/* A block from bp, or a new one; NULL when out of memory. */
static char *pool_take(struct buf_pool *bp)
{
	char *p;

	bp->taken++;
	if (bp->n > 0) {
		p = bp->free[--bp->n];
		POOL_UNPOISON(p, BUF_POOL_BLOCK);
		return p;
	}
	bp->made++;
	return malloc(BUF_POOL_BLOCK);
}

void buf_init(struct buf *b, size_t cap)
{
	buf_init_pooled(b, cap, NULL);
}

void buf_init_pooled(struct buf *b, size_t cap, struct buf_pool *bp)
{
	b->data = NULL;
	b->off = b->len = b->size = 0;
	b->cap = cap;
	b->pool = bp;
}

void buf_release(struct buf *b)
{
	struct buf_pool *bp = b->pool;

	if (bp && b->data && b->size == BUF_POOL_BLOCK && bp->n < BUF_POOL_MAX) {
		POOL_POISON(b->data, BUF_POOL_BLOCK);
		bp->free[bp->n++] = b->data;
	} else {
		free(b->data);
	}
	b->data = NULL;
	b->off = b->len = b->size = 0;
}

void buf_reset(struct buf *b)
{
	b->off = b->len = 0;
}

/* Ensures room for n more bytes plus a hidden NUL; compacts before growing. */
static int buf_grow(struct buf *b, size_t n)
{
	size_t used = b->len - b->off, want, nsize;
	char *p;

	if (n > b->cap || used > b->cap - n)
		return -ENOBUFS;
	want = used + n + 1;
	if (b->len + n + 1 <= b->size)
		return 0;
	if (b->off > 0 && want <= b->size) {
		memmove(b->data, b->data + b->off, used);
		b->off = 0;
		b->len = used;
		return 0;
	}
	if (!b->data && b->pool && want <= BUF_POOL_BLOCK) {
		p = pool_take(b->pool);
		if (!p)
			return -ENOMEM;
		b->data = p;
		b->size = BUF_POOL_BLOCK;
		b->off = b->len = 0;
		return 0;
	}
	nsize = b->size ? b->size : 256;
	while (nsize < want)
		nsize *= 2;
	if (nsize > b->cap + 1)
		nsize = b->cap + 1;
	if (b->off > 0) {
		memmove(b->data, b->data + b->off, used);
		b->off = 0;
		b->len = used;
	}
	p = realloc(b->data, nsize);
	if (!p)
		return -ENOMEM;
	b->data = p;
	b->size = nsize;
	return 0;
}

int buf_append_slow(struct buf *b, const void *p, size_t n)
{
	int rc;

	if (n == 0)
		return 0;
	rc = buf_grow(b, n);
	if (rc)
		return rc;
	memcpy(b->data + b->len, p, n);
	b->len += n;
	return 0;
}

int buf_append_str(struct buf *b, const char *s)
{
	return buf_append(b, s, strlen(s));
}

int buf_vprintf(struct buf *b, const char *fmt, va_list ap)
{
	va_list ap2;
	int n, rc;

	va_copy(ap2, ap);
	n = vsnprintf(NULL, 0, fmt, ap2);
	va_end(ap2);
	if (n < 0)
		return -EINVAL;
	rc = buf_grow(b, (size_t)n);
	if (rc)
		return rc;
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	b->len += (size_t)n;
	return 0;
}

int buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = buf_vprintf(b, fmt, ap);
	va_end(ap);
	return rc;
}

char *buf_reserve(struct buf *b, size_t n)
{
	if (buf_grow(b, n))
		return NULL;
	return b->data + b->len;
}

void buf_commit(struct buf *b, size_t n)
{
	b->len += n;
}

void buf_consume(struct buf *b, size_t n)
{
	if (n >= b->len - b->off) {
		b->off = b->len = 0;
		return;
	}
	b->off += n;
}

const char *buf_cstr(struct buf *b)
{
	if (!b->data) {
		if (buf_grow(b, 0))
			return "";
	}
	b->data[b->len] = '\0';
	return b->data + b->off;
}

int buf_append_u64(struct buf *b, unsigned long long v)
{
	char tmp[24];
	size_t i = sizeof(tmp);

	do {
		tmp[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	return buf_append(b, tmp + i, sizeof(tmp) - i);
}

int buf_append_hex(struct buf *b, unsigned long long v)
{
	static const char hex[] = "0123456789abcdef";
	char tmp[16];
	size_t i = sizeof(tmp);

	do {
		tmp[--i] = hex[v & 15];
		v >>= 4;
	} while (v);
	return buf_append(b, tmp + i, sizeof(tmp) - i);
}
