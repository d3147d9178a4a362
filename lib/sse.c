/*
 * sse.c - the Server-Sent Events parser (see sse.h).
 */
#include "sse.h"

#include <errno.h>
#include <string.h>

void sse_init(struct sse_parser *p, size_t max, sse_event_fn fn, void *user)
{
	memset(p, 0, sizeof(*p));
	p->on_event = fn;
	p->user = user;
	p->retry_ms = -1;
	buf_init(&p->line, max);
	buf_init(&p->data, max);
}

void sse_release(struct sse_parser *p)
{
	buf_release(&p->line);
	buf_release(&p->data);
}

void sse_reset(struct sse_parser *p)
{
	buf_reset(&p->line);
	buf_reset(&p->data);
	p->event[0] = '\0';
	p->id[0] = '\0';
	p->cr = 0;
	p->bom_checked = 0;
	p->has_data = 0;
}

static int dispatch(struct sse_parser *p)
{
	struct sse_event ev;
	size_t n = buf_used(&p->data);
	int rc;

	if (!p->has_data) {
		p->event[0] = '\0';
		return 0;
	}
	if (n > 0)
		n--; /* the "\n" after the last data line */
	p->data.len = p->data.off + n;
	ev.event = p->event[0] ? p->event : "message";
	ev.id = p->id;
	ev.data = buf_cstr(&p->data);
	ev.len = n;
	rc = p->on_event(p->user, &ev);
	buf_reset(&p->data);
	p->event[0] = '\0';
	p->has_data = 0;
	return rc;
}

static int field(struct sse_parser *p, const char *name, size_t nlen, const char *val, size_t vlen)
{
	if (nlen == 4 && memcmp(name, "data", 4) == 0) {
		int rc = buf_append(&p->data, val, vlen);

		if (rc == 0)
			rc = buf_append(&p->data, "\n", 1);
		p->has_data = 1;
		return rc;
	}
	if (nlen == 5 && memcmp(name, "event", 5) == 0) {
		if (vlen > SSE_NAME_MAX)
			return -ENOBUFS;
		memcpy(p->event, val, vlen);
		p->event[vlen] = '\0';
		return 0;
	}
	if (nlen == 2 && memcmp(name, "id", 2) == 0) {
		if (memchr(val, '\0', vlen))
			return 0;
		if (vlen > SSE_NAME_MAX)
			return -ENOBUFS;
		memcpy(p->id, val, vlen);
		p->id[vlen] = '\0';
		return 0;
	}
	if (nlen == 5 && memcmp(name, "retry", 5) == 0) {
		long v = 0;

		if (vlen == 0 || vlen > 9)
			return 0;
		for (size_t i = 0; i < vlen; i++) {
			if (val[i] < '0' || val[i] > '9')
				return 0;
			v = v * 10 + (val[i] - '0');
		}
		p->retry_ms = v;
	}
	return 0; /* unknown fields are ignored */
}

static int line(struct sse_parser *p)
{
	const char *s = buf_head(&p->line);
	size_t n = buf_used(&p->line);
	const char *colon;
	int rc;

	if (!p->bom_checked) {
		p->bom_checked = 1;
		if (n >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) {
			s += 3;
			n -= 3;
		}
	}
	if (n == 0)
		return dispatch(p);
	if (s[0] == ':') {
		p->comments++;
		rc = 0;
	} else if ((colon = memchr(s, ':', n)) != NULL) {
		size_t off = (size_t)(colon - s) + 1;

		if (off < n && s[off] == ' ')
			off++;
		rc = field(p, s, (size_t)(colon - s), s + off, n - off);
	} else {
		rc = field(p, s, n, "", 0);
	}
	buf_reset(&p->line);
	return rc;
}

int sse_feed(struct sse_parser *p, const char *buf, size_t len)
{
	size_t i = 0;

	while (i < len) {
		size_t j = i;
		int rc;

		if (p->cr) {
			p->cr = 0;
			if (buf[i] == '\n') {
				i++;
				continue;
			}
		}
		while (j < len && buf[j] != '\n' && buf[j] != '\r')
			j++;
		if (j > i && (rc = buf_append(&p->line, buf + i, j - i)) != 0)
			return rc;
		if (j == len)
			break;
		p->cr = buf[j] == '\r';
		i = j + 1;
		rc = line(p);
		buf_reset(&p->line);
		if (rc != 0)
			return rc;
	}
	return 0;
}
