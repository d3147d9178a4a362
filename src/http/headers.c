/*
 * headers.c - hop-by-hop rules and the forwarded request head (headers.h).
 */
#include "http/headers.h"

#include <errno.h>
#include <string.h>

int headers_is_hop_by_hop(struct str name)
{
	/* by length first: most names are compared with nothing */
	switch (name.len) {
	case 2:
		return http_name_eq_lit(name, "te");
	case 7:
		return http_name_eq_lit(name, "trailer") || http_name_eq_lit(name, "upgrade");
	case 10:
		return http_name_eq_lit(name, "connection") || http_name_eq_lit(name, "keep-alive");
	case 16:
		return http_name_eq_lit(name, "proxy-connection");
	case 17:
		return http_name_eq_lit(name, "transfer-encoding");
	case 18:
		return http_name_eq_lit(name, "proxy-authenticate");
	case 19:
		return http_name_eq_lit(name, "proxy-authorization");
	default:
		return 0;
	}
}

int headers_in_connection_tokens(const struct http_msg *m, struct str name)
{
	for (size_t i = 0; i < m->nheaders; i++)
		if (http_name_eq_lit(m->headers[i].name, "connection") &&
		    http_token_list_has(m->headers[i].value, name))
			return 1;
	return 0;
}

int headers_forward(struct buf *o, const struct http_msg *m, const char *const *skip, size_t nskip)
{
	size_t skip_len[HEADERS_MAX_SKIP];
	int conn = http_msg_header(m, "connection") != NULL, rc = 0;

	if (nskip > HEADERS_MAX_SKIP)
		return -EINVAL;
	for (size_t k = 0; k < nskip; k++)
		skip_len[k] = strlen(skip[k]);
	for (size_t i = 0; i < m->nheaders && !rc; i++) {
		const struct http_header *h = &m->headers[i];
		size_t k = 0;

		while (k < nskip && !http_name_eq(h->name, skip[k], skip_len[k]))
			k++;
		if (k < nskip || headers_is_hop_by_hop(h->name) ||
		    (conn && headers_in_connection_tokens(m, h->name)) ||
		    (m->absolute_form && http_name_eq_lit(h->name, "host")))
			continue;
		if (!(rc = buf_append(o, h->name.p, h->name.len)) &&
		    !(rc = buf_append_lit(o, ": ")) &&
		    !(rc = buf_append(o, h->value.p, h->value.len)))
			rc = buf_append_lit(o, "\r\n");
	}
	return rc;
}

int headers_request_line(struct buf *o, const struct http_msg *m)
{
	int rc = buf_append(o, m->method.p, m->method.len);

	if (!rc)
		rc = buf_append_lit(o, " ");
	if (!m->absolute_form) {
		if (!rc)
			rc = buf_append(o, m->target.p, m->target.len);
		return rc ? rc : buf_append_lit(o, " HTTP/1.1\r\n");
	}
	if (!rc)
		rc = buf_append(o, m->path.p, m->path.len);
	if (!rc && m->query.len && !(rc = buf_append_lit(o, "?")))
		rc = buf_append(o, m->query.p, m->query.len);
	if (!rc)
		rc = buf_append_lit(o, " HTTP/1.1\r\nHost: ");
	if (!rc)
		rc = buf_append(o, m->host.p, m->host.len);
	return rc ? rc : buf_append_lit(o, "\r\n");
}
