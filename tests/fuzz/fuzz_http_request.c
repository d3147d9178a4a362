/*
 * libFuzzer target for the request parser path (src/http/parser.c).
 *
 * The first input byte picks a split size; the rest is parsed as a stream of
 * pipelined requests twice: whole, and in slices of that size.  Both runs
 * must agree on the status and on the number of messages, and every string
 * handed out must lie inside the message it came from (ASan checks reads).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/parser.h"

struct fz {
	size_t n;
	uint64_t sum;
};

static void touch(struct fz *f, struct str s)
{
	size_t i;

	for (i = 0; i < s.len; i++)
		f->sum += (unsigned char)s.p[i];
}

static void visit(void *ud, const struct http_msg *m, const char *body, size_t len)
{
	struct fz *f = ud;
	size_t i;

	f->n++;
	touch(f, m->method);
	touch(f, m->target);
	touch(f, m->path);
	touch(f, m->query);
	touch(f, m->host);
	for (i = 0; i < m->nheaders; i++) {
		touch(f, m->headers[i].name);
		touch(f, m->headers[i].value);
	}
	touch(f, str_make(body, len));
	(void)http_msg_header(m, "content-type");
	(void)http_msg_header_has_token(m, "connection", "close");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct http_limits lim = {.max_header_bytes = 512, .max_headers = 8};
	struct fz a = {0}, b = {0};
	size_t step, na = 0, nb = 0;
	int ra, rb;

	if (size < 1)
		return 0;
	step = (size_t)data[0] % 17 + 1;
	data++;
	size--;

	ra = http_parse_buffer(HTTP_PARSE_REQUEST, NULL, (const char *)data, size, 0, 4096, visit,
	                       &a, &na);
	rb = http_parse_buffer(HTTP_PARSE_REQUEST, NULL, (const char *)data, size, step, 4096,
	                       visit, &b, &nb);
	if (ra != rb || na != nb || a.sum != b.sum)
		abort();
	if (ra != 0 && ra != 1 && (ra < 400 || ra > 505))
		abort();

	/* small caps exercise the 431 paths */
	ra = http_parse_buffer(HTTP_PARSE_REQUEST, &lim, (const char *)data, size, 0, 64, NULL,
	                       NULL, &na);
	rb = http_parse_buffer(HTTP_PARSE_REQUEST, &lim, (const char *)data, size, step, 64, NULL,
	                       NULL, &nb);
	if (ra != rb || na != nb)
		abort();

	/* and the same bytes as a response stream */
	(void)http_parse_buffer(HTTP_PARSE_RESPONSE, NULL, (const char *)data, size, step, 4096,
	                        visit, &a, NULL);
	return 0;
}
