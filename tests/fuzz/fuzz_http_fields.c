/*
 * libFuzzer target for the request fields canaryd reads piecewise: cookies
 * (proxy_cookie, src/proxy/table.c), query strings (str_query_param,
 * src/core/str.c), percent-decoding of path parameters (pct_decode in
 * src/api/flags.c, included to reach it) and its inverse source_urlencode
 * (src/analysis/source.c), and Last-Event-ID as the stream reads it.
 *
 * Input lines: line 1 is a name (cookie and query parameter), line 2 a query
 * string, line 3 a Last-Event-ID value, every further line one Cookie header.
 * Checks: every value found lies inside the bytes it was found in; a decoded
 * parameter has no NUL and fits its buffer; encoding then decoding any
 * NUL-free text gives it back.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/api/flags.c"
#include "analysis/source.h"
#include "http/parser.h"
#include "proxy/table.h"

#define FIELDS_MAX_INPUT 8192
#define FIELDS_MAX_HDRS  16

static void inside(struct str v, const char *p, size_t len)
{
	if (v.p && (v.p < p || v.p + v.len > p + len))
		abort();
}

/* The next line of [*p, end) (without its LF); advances *p. */
static struct str next_line(const char **p, const char *end)
{
	const char *s = *p, *nl = memchr(s, '\n', (size_t)(end - s));
	size_t n = nl ? (size_t)(nl - s) : (size_t)(end - s);

	*p = nl ? nl + 1 : end;
	return str_make(s, n);
}

static void check_decode(struct str s)
{
	char dec[NODE_MAX + 1], enc[3 * (NODE_MAX + 1) + 1], again[NODE_MAX + 1];

	if (pct_decode(s, dec, sizeof(dec)) == 0) {
		if (strlen(dec) > NODE_MAX)
			abort();
		/* the node name round-trips through the encoder canaryd uses */
		if (source_urlencode(dec, enc, sizeof(enc)) != 0 ||
		    pct_decode(str_c(enc), again, sizeof(again)) != 0 || strcmp(dec, again) != 0)
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data, *end = p + size;
	struct http_header hdrs[FIELDS_MAX_HDRS];
	struct http_msg msg;
	struct str name, query, leid, v;
	unsigned long long id;
	char cname[128];

	if (size > FIELDS_MAX_INPUT)
		return 0;
	name = next_line(&p, end);
	query = next_line(&p, end);
	leid = next_line(&p, end);
	if (name.len >= sizeof(cname) || memchr(name.p, '\0', name.len))
		return 0;
	memcpy(cname, name.p, name.len);
	cname[name.len] = '\0';

	memset(&msg, 0, sizeof(msg));
	msg.headers = hdrs;
	while (p < end && msg.nheaders < FIELDS_MAX_HDRS) {
		hdrs[msg.nheaders].name =
		    msg.nheaders % 3 == 2 ? STR_LIT("X-Other") : STR_LIT("Cookie");
		hdrs[msg.nheaders].value = next_line(&p, end);
		msg.nheaders++;
	}
	v = proxy_cookie(&msg, cname);
	if (v.p) {
		size_t h;

		for (h = 0; h < msg.nheaders; h++)
			if (v.p >= hdrs[h].value.p &&
			    v.p + v.len <= hdrs[h].value.p + hdrs[h].value.len)
				break;
		if (h == msg.nheaders)
			abort();
	}

	v = str_query_param(query, cname);
	inside(v, query.p, query.len);
	if (v.p)
		check_decode(v);
	check_decode(query);
	check_decode(name);

	/* Last-Event-ID, as h_stream() reads it */
	v = str_trim(leid);
	inside(v, leid.p, leid.len);
	if (v.len)
		(void)str_to_u64(v, &id);
	return 0;
}
