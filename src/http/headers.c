/*
 * headers.c - hop-by-hop rules and the forwarded request head (headers.h).
 */
#include "http/headers.h"

int headers_is_hop_by_hop(struct str name)
{
	static const char *const hop[] = {"connection",
	                                  "keep-alive",
	                                  "proxy-connection",
	                                  "te",
	                                  "trailer",
	                                  "transfer-encoding",
	                                  "upgrade",
	                                  "proxy-authenticate",
	                                  "proxy-authorization"};

	for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++)
		if (str_caseeq_c(name, hop[i]))
			return 1;
	return 0;
}

int headers_in_connection_tokens(const struct http_msg *m, struct str name)
{
	for (size_t i = 0; i < m->nheaders; i++)
		if (str_caseeq_c(m->headers[i].name, "connection") &&
		    http_token_list_has(m->headers[i].value, name))
			return 1;
	return 0;
}

int headers_forward(struct buf *o, const struct http_msg *m, const char *const *skip, size_t nskip)
{
	int conn = http_msg_header(m, "connection") != NULL, rc = 0;

	for (size_t i = 0; i < m->nheaders && !rc; i++) {
		const struct http_header *h = &m->headers[i];
		size_t k = 0;

		while (k < nskip && !str_caseeq_c(h->name, skip[k]))
			k++;
		if (k < nskip || headers_is_hop_by_hop(h->name) ||
		    (conn && headers_in_connection_tokens(m, h->name)) ||
		    (m->absolute_form && str_caseeq_c(h->name, "host")))
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
