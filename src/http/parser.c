/*
 * parser.c - llhttp wrapper with canaryd's strict checks.  See parser.h and
 * docs/http.md for the status table.
 */
#include "http/parser.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum { HP_HEADERS = 0, HP_BODY, HP_DONE, HP_ERROR };
enum { PAUSE_NONE = 0, PAUSE_COMPLETE, PAUSE_BODY };

/*
 * Raw header-section scanner.  llhttp 8.1 accepts obs-fold and bare LF line
 * ends, so every byte of the header section is also checked here before
 * llhttp sees it: a line may only end in CRLF, a CR must be followed by LF,
 * and no header line may start with SP/HTAB.
 */
enum {
	SC_START = 0, /* before the start line (empty CRLF lines tolerated) */
	SC_START_CR,
	SC_LINE,
	SC_CR,
	SC_LF, /* at the start of a header line */
	SC_END_CR,
	SC_DONE,
};

enum { SCAN_OK = 0, SCAN_BARE_CR, SCAN_BARE_LF, SCAN_OBS_FOLD };

static const char *const scan_reason[] = {"", "bare CR in header section",
                                          "bare LF in header section",
                                          "obs-fold (line folding) in header section"};

/* Scans d[0..n); returns SCAN_* and the offending index in *at, or with
 * SCAN_OK the index just past the header section once it is complete. */
static int scan_header_bytes(int *state, const char *d, size_t n, size_t *at)
{
	int s = *state;
	size_t i;

	for (i = 0; i < n && s != SC_DONE; i++) {
		char c = d[i];
		int err = SCAN_OK;

		switch (s) {
		case SC_START:
			if (c == '\r')
				s = SC_START_CR;
			else if (c == '\n')
				err = SCAN_BARE_LF;
			else
				s = SC_LINE;
			break;
		case SC_START_CR:
			if (c == '\n')
				s = SC_START;
			else
				err = SCAN_BARE_CR;
			break;
		case SC_LINE:
			if (c == '\r')
				s = SC_CR;
			else if (c == '\n')
				err = SCAN_BARE_LF;
			break;
		case SC_CR:
			if (c == '\n')
				s = SC_LF;
			else
				err = SCAN_BARE_CR;
			break;
		case SC_LF:
			if (c == ' ' || c == '\t')
				err = SCAN_OBS_FOLD;
			else if (c == '\r')
				s = SC_END_CR;
			else if (c == '\n')
				err = SCAN_BARE_LF;
			else
				s = SC_LINE;
			break;
		case SC_END_CR:
			if (c == '\n')
				s = SC_DONE;
			else
				err = SCAN_BARE_CR;
			break;
		default:
			break;
		}
		if (err != SCAN_OK) {
			*state = s;
			*at = i;
			return err;
		}
	}
	*state = s;
	*at = i;
	return SCAN_OK;
}

/*
 * Chunk extensions (RFC 9112 7.1.1).  llhttp 8.1 rejects valid ones
 * ("3;a=b;c", quoted values with escapes), so the chunk-size lines are
 * tracked here: the size digits and the CRLF go to llhttp, which still judges
 * them; the extension, from the first SP/HTAB/';' after the digits up to the
 * CR, is checked against the grammar below and never given to llhttp.
 *   chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )
 */
enum {
	CK_OFF = 0, /* not in chunk framing (or llhttp will reject it anyway) */
	CK_SIZE,    /* in the hex digits */
	CK_EXT,     /* in an extension: swallowed */
	CK_SIZE_LF, /* the CR of the size line was seen */
	CK_DATA,    /* `left` bytes of chunk data */
	CK_DATA_CR, /* the CRLF after the data */
	CK_DATA_LF,
};

enum {
	EX_BWS = 0,
	EX_NAME0,
	EX_NAME,
	EX_AFTER_NAME,
	EX_VAL0,
	EX_TOKEN,
	EX_QS,
	EX_QP,
	EX_AFTER_VAL
};

#define CHUNK_EXT_MAX 4096 /* extension bytes per chunk line */

static int is_tchar(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c && strchr("!#$%&'*+-.^_`|~", c));
}

/*
 * Follows n bytes of chunk framing that llhttp is about to get, stopping
 * before the first byte of an extension (the state is then CK_EXT).
 * Returns how many bytes llhttp may get.  Pure in s: running it again over
 * the same bytes from the same state gives the same result.
 */
static size_t chunk_track(struct http_chunk_scan *s, const char *d, size_t n)
{
	size_t i = 0;

	while (i < n && s->st != CK_OFF && s->st != CK_EXT) {
		unsigned char c = (unsigned char)d[i];

		switch (s->st) {
		case CK_SIZE:
			if (str_hexval(c) >= 0 && s->digits < 16) {
				s->size = s->size * 16 + (uint64_t)str_hexval(c);
				s->digits++;
			} else if (c == '\r') {
				s->st = CK_SIZE_LF;
			} else if (s->digits && (c == ';' || c == ' ' || c == '\t')) {
				s->st = CK_EXT;
				s->est = EX_BWS;
				s->ext_len = 0;
				return i;
			} else {
				s->st = CK_OFF; /* llhttp rejects it */
			}
			break;
		case CK_SIZE_LF:
			if (c == '\n' && s->size) {
				s->st = CK_DATA;
				s->left = s->size;
			} else {
				s->st = CK_OFF; /* last chunk: trailers are llhttp's */
			}
			break;
		case CK_DATA: {
			size_t k = n - i < s->left ? n - i : (size_t)s->left;

			s->left -= k;
			i += k;
			if (!s->left)
				s->st = CK_DATA_CR;
			continue;
		}
		case CK_DATA_CR:
			s->st = CK_DATA_LF;
			break;
		case CK_DATA_LF:
			*s = (struct http_chunk_scan){.st = CK_SIZE};
			break;
		default:
			break;
		}
		i++;
	}
	return i;
}

/*
 * Swallows extension bytes up to (not including) the CR that ends the chunk
 * line; *used gets how many.  Returns 0, or -1 when they break the grammar.
 */
static int chunk_ext_scan(struct http_chunk_scan *s, const char *d, size_t n, size_t *used)
{
	size_t i;

	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)d[i];
		int ws = c == ' ' || c == '\t';

		if (c == '\r') {
			if (s->est != EX_NAME && s->est != EX_AFTER_NAME && s->est != EX_TOKEN &&
			    s->est != EX_AFTER_VAL)
				break;
			s->st = CK_SIZE; /* the CR goes to llhttp */
			*used = i;
			return 0;
		}
		if (++s->ext_len > CHUNK_EXT_MAX)
			break;
		switch (s->est) {
		case EX_BWS:
			if (c == ';')
				s->est = EX_NAME0;
			else if (!ws)
				goto out_bad;
			break;
		case EX_NAME0:
			if (is_tchar(c))
				s->est = EX_NAME;
			else if (!ws)
				goto out_bad;
			break;
		case EX_NAME:
		case EX_AFTER_NAME:
			if (c == '=')
				s->est = EX_VAL0;
			else if (c == ';')
				s->est = EX_NAME0;
			else if (ws)
				s->est = EX_AFTER_NAME;
			else if (s->est == EX_AFTER_NAME || !is_tchar(c))
				goto out_bad;
			break;
		case EX_VAL0:
			if (c == '"')
				s->est = EX_QS;
			else if (is_tchar(c))
				s->est = EX_TOKEN;
			else if (!ws)
				goto out_bad;
			break;
		case EX_TOKEN:
		case EX_AFTER_VAL:
			if (c == ';')
				s->est = EX_NAME0;
			else if (ws)
				s->est = EX_AFTER_VAL;
			else if (s->est == EX_AFTER_VAL || !is_tchar(c))
				goto out_bad;
			break;
		case EX_QS: /* qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text */
			if (c == '"')
				s->est = EX_AFTER_VAL;
			else if (c == '\\')
				s->est = EX_QP;
			else if (c != '\t' && (c < 0x20 || c == 0x7f))
				goto out_bad;
			break;
		case EX_QP: /* quoted-pair = "\\" ( HTAB / SP / VCHAR / obs-text ) */
			if (c != '\t' && (c < 0x20 || c == 0x7f))
				goto out_bad;
			s->est = EX_QS;
			break;
		default:
			goto out_bad;
		}
	}
	if (i == n) {
		*used = n;
		return 0;
	}
out_bad:
	*used = i;
	return -1;
}

static struct http_parser *P(llhttp_t *ll)
{
	return ll->data;
}

/* Records an error (the first one wins). */
static void note_error(struct http_parser *p, int status, const char *reason)
{
	if (p->status == 0) {
		p->status = status;
		p->reason = reason;
	}
}

/* Records an error from inside a callback; llhttp then stops with HPE_USER. */
static int cb_fail(struct http_parser *p, int status, const char *reason)
{
	note_error(p, status, reason);
	return HPE_USER;
}

static int hbuf_add(struct http_parser *p, const char *at, size_t len)
{
	if (buf_append(&p->hbuf, at, len) != 0)
		return cb_fail(p, 431, "header section too large");
	return 0;
}

static int on_url(llhttp_t *ll, const char *at, size_t len)
{
	struct http_parser *p = P(ll);

	if (p->url_len == 0)
		p->url_off = (uint32_t)p->hbuf.len;
	p->url_len += (uint32_t)len;
	return hbuf_add(p, at, len);
}

static int on_status(llhttp_t *ll, const char *at, size_t len)
{
	struct http_parser *p = P(ll);

	if (p->reason_len == 0)
		p->reason_off = (uint32_t)p->hbuf.len;
	p->reason_len += (uint32_t)len;
	return hbuf_add(p, at, len);
}

static int grow_headers(struct http_parser *p)
{
	size_t ncap = p->hdr_cap ? p->hdr_cap * 2 : 16;
	struct http_hoff *o;
	struct http_header *h;

	if (ncap > p->lim.max_headers + 1)
		ncap = p->lim.max_headers + 1;
	o = realloc(p->offs, ncap * sizeof(*o));
	if (!o)
		return -ENOMEM;
	p->offs = o;
	h = realloc(p->hdrs, ncap * sizeof(*h));
	if (!h)
		return -ENOMEM;
	p->hdrs = h;
	p->hdr_cap = ncap;
	return 0;
}

/*
 * Trailer fields are dropped but their size is capped like the header
 * section.  Checked when a field or value is complete, so that llhttp has
 * judged its characters first and the outcome does not depend on how the
 * bytes were split across reads.
 */
static int check_trailers(struct http_parser *p)
{
	if (p->trl_bytes > p->lim.max_header_bytes)
		return cb_fail(p, 431, "trailer section too large");
	return 0;
}

static int on_header_field(llhttp_t *ll, const char *at, size_t len)
{
	struct http_parser *p = P(ll);

	p->name_len += len;
	if (p->phase != HP_HEADERS) { /* trailers: counted, dropped */
		p->trl_bytes += len;
		return 0;
	}
	if (!p->in_field) {
		/* counted when the name is complete (see on_header_field_complete),
		 * so a malformed name gives 400 whatever the read boundaries */
		if (p->nhdr == p->hdr_cap && grow_headers(p) != 0)
			return cb_fail(p, 500, "out of memory");
		p->offs[p->nhdr] = (struct http_hoff){(uint32_t)p->hbuf.len, 0, 0, 0};
		p->nhdr++;
		p->in_field = 1;
	}
	p->offs[p->nhdr - 1].nl += (uint32_t)len;
	return hbuf_add(p, at, len);
}

static int on_header_field_complete(llhttp_t *ll)
{
	struct http_parser *p = P(ll);
	size_t name_len = p->name_len;

	/* llhttp 8.1 takes ": v" as a header with an empty name (and would
	 * glue its value to the previous header's): a proxy must not forward it */
	p->name_len = 0;
	if (name_len == 0)
		return cb_fail(p, 400, "empty header name");
	if (p->phase != HP_HEADERS)
		return check_trailers(p);
	p->in_field = 0;
	if (p->nhdr > p->lim.max_headers)
		return cb_fail(p, 431, "too many header fields");
	if (p->nhdr > 0)
		p->offs[p->nhdr - 1].vo = (uint32_t)p->hbuf.len;
	return 0;
}

static int on_header_value(llhttp_t *ll, const char *at, size_t len)
{
	struct http_parser *p = P(ll);

	if (p->phase != HP_HEADERS) {
		p->trl_bytes += len;
		return 0;
	}
	if (p->nhdr == 0)
		return cb_fail(p, 400, "header value without a name");
	p->offs[p->nhdr - 1].vl += (uint32_t)len;
	return hbuf_add(p, at, len);
}

static int on_header_value_complete(llhttp_t *ll)
{
	struct http_parser *p = P(ll);
	struct http_hoff *o;
	struct str name;

	if (p->phase != HP_HEADERS)
		return check_trailers(p);
	if (p->nhdr == 0)
		return 0;
	o = &p->offs[p->nhdr - 1];
	name = str_make(p->hbuf.data + o->no, o->nl);
	/* llhttp skips leading OWS; drop the trailing one. */
	while (o->vl > 0 &&
	       (p->hbuf.data[o->vo + o->vl - 1] == ' ' || p->hbuf.data[o->vo + o->vl - 1] == '\t'))
		o->vl--;
	if (http_name_eq_lit(name, "host")) {
		p->n_host++;
		p->host_idx = (uint32_t)(p->nhdr - 1);
	} else if (http_name_eq_lit(name, "content-length")) {
		p->n_cl++;
	} else if (http_name_eq_lit(name, "transfer-encoding")) {
		p->n_te++;
		p->te_idx = (uint32_t)(p->nhdr - 1);
	}
	return 0;
}

static enum http_method method_of(int m)
{
	switch (m) {
	case HTTP_GET:
		return HTTP_M_GET;
	case HTTP_HEAD:
		return HTTP_M_HEAD;
	case HTTP_POST:
		return HTTP_M_POST;
	case HTTP_PUT:
		return HTTP_M_PUT;
	case HTTP_DELETE:
		return HTTP_M_DELETE;
	case HTTP_PATCH:
		return HTTP_M_PATCH;
	case HTTP_OPTIONS:
		return HTTP_M_OPTIONS;
	case HTTP_CONNECT:
		return HTTP_M_CONNECT;
	case HTTP_TRACE:
		return HTTP_M_TRACE;
	default:
		return HTTP_M_OTHER;
	}
}

/*
 * Splits the request-target into path and query (RFC 9112 section 3.2).  An
 * absolute-form target ("http://authority/path?query") sets m->absolute_form
 * and returns its authority in *authority; -1 when it is not an http(s) URI
 * with a non-empty authority free of userinfo (RFC 9110 4.2.4).
 */
static int split_target(struct http_msg *m, struct str *authority)
{
	const char *t = m->target.p, *end = t + m->target.len, *path = t, *q;

	*authority = STR_NULL;
	if (m->target.len > 0 && t[0] != '/' && t[0] != '*') {
		/* absolute-form: scheme "://" authority path */
		const char *s = memchr(t, ':', m->target.len), *a;
		struct str scheme = str_make(t, s ? (size_t)(s - t) : 0);

		if (!s || end - s < 3 || s[1] != '/' || s[2] != '/' ||
		    (!str_caseeq_c(scheme, "http") && !str_caseeq_c(scheme, "https")))
			return -1;
		a = path = s + 3;
		while (path < end && *path != '/' && *path != '?')
			path++;
		*authority = str_make(a, (size_t)(path - a));
		if (authority->len == 0 || memchr(a, '@', authority->len))
			return -1;
		m->absolute_form = 1;
	}
	q = memchr(path, '?', (size_t)(end - path));
	if (q) {
		m->path = str_make(path, (size_t)(q - path));
		m->query = str_make(q + 1, (size_t)(end - q - 1));
	} else {
		m->path = str_make(path, (size_t)(end - path));
		m->query = str_make(end, 0);
	}
	if (m->path.len == 0)
		m->path = STR_LIT("/");
	return 0;
}

/* Checks Transfer-Encoding: only a lone "chunked" is accepted. */
static int check_te(struct http_parser *p, struct str v)
{
	const char *c = memchr(v.p, ',', v.len);
	struct str last = v;

	if (c) {
		const char *r = v.p + v.len;

		while (r > v.p && r[-1] != ',')
			r--;
		last = str_trim(str_make(r, (size_t)(v.p + v.len - r)));
	}
	if (!str_caseeq_c(last, "chunked"))
		return cb_fail(p, 400, "Transfer-Encoding does not end in chunked");
	if (c)
		return cb_fail(p, 501, "transfer coding not supported");
	return 0;
}

static int on_headers_complete(llhttp_t *ll)
{
	struct http_parser *p = P(ll);
	struct http_msg *m = &p->msg;
	const char *base = p->hbuf.data ? p->hbuf.data : "";
	size_t i;
	int rc;

	p->phase = HP_BODY;
	ll->upgrade = 0; /* no upgrades: the next bytes are HTTP again */
	for (i = 0; i < p->nhdr; i++) {
		p->hdrs[i].name = str_make(base + p->offs[i].no, p->offs[i].nl);
		p->hdrs[i].value = str_make(base + p->offs[i].vo, p->offs[i].vl);
	}
	m->headers = p->hdrs;
	m->nheaders = p->nhdr;
	m->version = ll->http_major * 10 + ll->http_minor;
	m->keep_alive = llhttp_should_keep_alive(ll);
	m->chunked = (ll->flags & F_CHUNKED) != 0;
	m->has_content_length = (ll->flags & F_CONTENT_LENGTH) != 0;
	m->content_length = m->has_content_length ? ll->content_length : 0;

	if (ll->http_major != 1 || ll->http_minor > 1)
		return cb_fail(p, 505, "HTTP version not supported");
	if (p->n_cl > 1)
		return cb_fail(p, 400, "multiple Content-Length");
	if (p->n_cl > 0 && p->n_te > 0)
		return cb_fail(p, 400, "Content-Length with Transfer-Encoding");
	if (p->n_te > 1)
		return cb_fail(p, 400, "multiple Transfer-Encoding");
	if (p->n_te == 1) {
		if (m->version == 10)
			return cb_fail(p, 400, "Transfer-Encoding in HTTP/1.0");
		if ((rc = check_te(p, p->hdrs[p->te_idx].value)) != 0)
			return rc;
	}

	if (p->kind == HTTP_PARSE_REQUEST) {
		const char *name = llhttp_method_name((llhttp_method_t)ll->method);
		struct str authority = STR_NULL;

		m->method_id = method_of(ll->method);
		m->method = str_c(name);
		m->target = str_make(base + p->url_off, p->url_len);
		if (m->method_id == HTTP_M_CONNECT) /* authority-form: refused below */
			m->path = STR_LIT("/");
		else if (split_target(m, &authority) != 0)
			return cb_fail(p, 400, "invalid absolute-form request-target");
		if (p->n_host > 1)
			return cb_fail(p, 400, "more than one Host");
		if (p->n_host == 0 && m->version == 11)
			return cb_fail(p, 400, "missing Host");
		if (p->n_host == 1)
			m->host = p->hdrs[p->host_idx].value;
		if (m->absolute_form)
			m->host = authority; /* RFC 9112 3.2.2: replaces Host */
		if (m->method_id == HTTP_M_CONNECT)
			return cb_fail(p, 501, "CONNECT is not supported");
	} else {
		m->status = ll->status_code;
		m->reason = str_make(base + p->reason_off, p->reason_len);
		if (m->status == 101)
			return cb_fail(p, 502, "protocol upgrade not supported");
		if (p->expect_no_body || m->status / 100 == 1 || m->status == 204 ||
		    m->status == 304)
			m->no_body = 1;
	}
	if (m->no_body == 0 && !m->chunked && !m->has_content_length &&
	    p->kind == HTTP_PARSE_REQUEST)
		m->no_body = 1;
	if (m->has_content_length && m->content_length == 0)
		m->no_body = 1;
	if (m->chunked && !m->no_body)
		p->ck = (struct http_chunk_scan){.st = CK_SIZE};

	if (p->cbs && p->cbs->on_headers) {
		rc = p->cbs->on_headers(p, m, p->data);
		if (rc >= 400)
			return cb_fail(p, rc, "rejected by handler");
	}
	if (p->body_limit && !m->no_body && m->has_content_length &&
	    m->content_length > p->body_limit)
		return cb_fail(p, 413, "body too large");
	return p->expect_no_body ? 1 : 0;
}

static int on_body(llhttp_t *ll, const char *at, size_t len)
{
	struct http_parser *p = P(ll);
	int rc = 0;

	p->body_bytes += len;
	if (p->body_limit && p->body_bytes > p->body_limit)
		return cb_fail(p, 413, "body too large");
	if (p->cbs && p->cbs->on_body)
		rc = p->cbs->on_body(p, at, len, p->data);
	if (rc >= 400)
		return cb_fail(p, rc, "body rejected by handler");
	if (rc == HTTP_PARSER_PAUSE) {
		p->pause_why = PAUSE_BODY;
		return HPE_PAUSED;
	}
	return 0;
}

static int on_message_complete(llhttp_t *ll)
{
	struct http_parser *p = P(ll);
	int rc = 0;

	p->phase = HP_DONE;
	p->pause_why = PAUSE_COMPLETE;
	if (p->cbs && p->cbs->on_complete)
		rc = p->cbs->on_complete(p, &p->msg, p->data);
	if (rc >= 400) {
		cb_fail(p, rc, "rejected by handler");
		return -1;
	}
	return HPE_PAUSED;
}

static const llhttp_settings_t settings = {
    .on_url = on_url,
    .on_status = on_status,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static void reset_message(struct http_parser *p)
{
	buf_reset(&p->hbuf);
	p->nhdr = 0;
	p->url_off = p->url_len = p->reason_off = p->reason_len = 0;
	p->in_field = 0;
	p->n_host = p->n_cl = p->n_te = 0;
	p->te_idx = p->host_idx = 0;
	memset(&p->msg, 0, sizeof(p->msg));
	p->phase = HP_HEADERS;
	p->pause_why = PAUSE_NONE;
	p->scan = SC_START;
	p->hdr_bytes = p->trl_bytes = 0;
	p->body_bytes = 0;
	p->body_limit = 0;
	p->expect_no_body = 0;
	p->started = 0;
	p->name_len = 0;
	memset(&p->ck, 0, sizeof(p->ck));
}

void http_parser_init(struct http_parser *p, enum http_parser_kind kind,
                      const struct http_limits *lim, const struct http_parser_cbs *cbs, void *data)
{
	memset(p, 0, sizeof(*p));
	p->kind = kind;
	p->lim.max_header_bytes =
	    lim && lim->max_header_bytes ? lim->max_header_bytes : HTTP_DEFAULT_MAX_HEADER_BYTES;
	p->lim.max_headers = lim && lim->max_headers ? lim->max_headers : HTTP_DEFAULT_MAX_HEADERS;
	p->cbs = cbs;
	p->data = data;
	buf_init(&p->hbuf, p->lim.max_header_bytes);
	llhttp_init(&p->ll, kind == HTTP_PARSE_REQUEST ? HTTP_REQUEST : HTTP_RESPONSE, &settings);
	p->ll.data = p;
	reset_message(p);
}

void http_parser_release(struct http_parser *p)
{
	buf_release(&p->hbuf);
	free(p->offs);
	free(p->hdrs);
	p->offs = NULL;
	p->hdrs = NULL;
	p->hdr_cap = p->nhdr = 0;
}

void http_parser_shrink(struct http_parser *p)
{
	if (p->phase == HP_HEADERS && !p->started)
		http_parser_release(p);
}

void http_parser_trim(struct http_parser *p, size_t keep)
{
	if (p->hbuf.size > keep || p->hdr_cap * (sizeof(*p->offs) + sizeof(*p->hdrs)) > keep)
		http_parser_shrink(p);
}

static int set_error(struct http_parser *p, int status, const char *reason)
{
	note_error(p, status, reason);
	p->phase = HP_ERROR;
	return HTTP_PARSE_ERROR;
}

/* Maps an llhttp error to the status we answer with. */
static int map_llhttp_error(struct http_parser *p, llhttp_errno_t e)
{
	const char *why = llhttp_get_error_reason(&p->ll);
	const char *reason;

	if (p->status)
		return set_error(p, p->status, p->reason);
	switch (e) {
	case HPE_INVALID_VERSION:
		/* "HTTP/3.0": well-formed but unsupported; "HTTP/1.x": malformed */
		if (why && strcmp(why, "Invalid HTTP version") == 0)
			return set_error(p, 505, "HTTP version not supported");
		reason = "malformed HTTP version";
		break;
	case HPE_INVALID_METHOD:
		reason = "invalid or unknown method";
		break;
	case HPE_INVALID_CHUNK_SIZE:
		reason = "invalid chunk size";
		break;
	case HPE_UNEXPECTED_CONTENT_LENGTH:
		reason = "conflicting Content-Length / Transfer-Encoding";
		break;
	case HPE_INVALID_CONTENT_LENGTH:
		reason = "invalid Content-Length";
		break;
	case HPE_INVALID_TRANSFER_ENCODING:
		reason = "invalid Transfer-Encoding";
		break;
	case HPE_CR_EXPECTED:
	case HPE_LF_EXPECTED:
		reason = "bad line ending";
		break;
	case HPE_INVALID_HEADER_TOKEN:
		reason = "invalid header";
		break;
	case HPE_INVALID_URL:
		reason = "invalid request-target";
		break;
	case HPE_INVALID_STATUS:
		reason = "invalid status line";
		break;
	case HPE_CLOSED_CONNECTION:
		reason = "data after Connection: close";
		break;
	default:
		reason = "malformed message";
		break;
	}
	return set_error(p, 400, reason);
}

int http_parser_feed(struct http_parser *p, const char *data, size_t len, size_t *consumed)
{
	size_t total = 0;

	*consumed = 0;
	if (p->phase == HP_ERROR)
		return HTTP_PARSE_ERROR;
	if (p->phase == HP_DONE)
		return HTTP_PARSE_DONE;
	if (llhttp_get_errno(&p->ll) == HPE_PAUSED)
		return HTTP_PARSE_PAUSED;

	/* In the body, one empty execute lets llhttp finish a message whose
	 * last body byte was delivered before a pause. */
	for (int first = 1; total < len || (first && p->phase == HP_BODY); first = 0) {
		const char *d = data + total;
		size_t n = len - total, bad_at = 0;
		int in_hdr = p->phase == HP_HEADERS, scan_err = SCAN_OK;
		struct http_chunk_scan ck = p->ck;
		llhttp_errno_t e;

		if (in_hdr) {
			size_t allow = p->lim.max_header_bytes - p->hdr_bytes;

			if (n > allow)
				n = allow;
			scan_err = scan_header_bytes(&p->scan, d, n, &bad_at);
			/* on an error, let llhttp judge what precedes first; at the
			 * end of the section, stop so the body goes through the
			 * chunk tracker */
			if (scan_err != SCAN_OK || p->scan == SC_DONE)
				n = bad_at;
		}
		if (!in_hdr && p->ck.st == CK_EXT) {
			size_t used = 0;
			int bad = chunk_ext_scan(&p->ck, d, n, &used);

			total += used;
			*consumed = total;
			if (bad)
				return set_error(p, 400, "invalid chunk extension");
			continue;
		}
		if (!in_hdr && p->ck.st != CK_OFF)
			n = chunk_track(&ck, d, n); /* up to an extension */
		if (n > 0 && !p->started)
			p->started = 1;
		e = n > 0 || !in_hdr ? llhttp_execute(&p->ll, d, n) : HPE_OK;
		if (e == HPE_OK) {
			total += n;
			*consumed = total;
			if (!in_hdr && p->ck.st != CK_OFF)
				p->ck = ck;
			if (in_hdr && p->phase == HP_HEADERS) {
				p->hdr_bytes += n;
				if (scan_err != SCAN_OK)
					return set_error(p, 400, scan_reason[scan_err]);
				if (p->hdr_bytes >= p->lim.max_header_bytes)
					return set_error(p, 431, "header section too large");
			}
			continue;
		}
		if (e == HPE_PAUSED) {
			size_t used = (size_t)(llhttp_get_error_pos(&p->ll) - d);

			if (!in_hdr && p->ck.st != CK_OFF)
				chunk_track(&p->ck, d, used);
			total += used;
			*consumed = total;
			if (p->pause_why == PAUSE_COMPLETE)
				return HTTP_PARSE_DONE;
			return HTTP_PARSE_PAUSED;
		}
		if (e == HPE_PAUSED_UPGRADE) { /* cannot happen: upgrade is cleared */
			total += (size_t)(llhttp_get_error_pos(&p->ll) - d);
			*consumed = total;
			return set_error(p, 501, "protocol upgrade not supported");
		}
		*consumed = total + (size_t)(llhttp_get_error_pos(&p->ll) - d);
		return map_llhttp_error(p, e);
	}
	return HTTP_PARSE_AGAIN;
}

void http_parser_next(struct http_parser *p)
{
	if (p->phase == HP_ERROR)
		return;
	reset_message(p);
	llhttp_resume(&p->ll);
}

void http_parser_resume(struct http_parser *p)
{
	if (p->phase == HP_ERROR || p->pause_why != PAUSE_BODY)
		return;
	p->pause_why = PAUSE_NONE;
	llhttp_resume(&p->ll);
}

int http_parser_finish(struct http_parser *p)
{
	llhttp_errno_t e;

	if (p->phase == HP_ERROR)
		return HTTP_PARSE_ERROR;
	if (p->phase == HP_DONE)
		return HTTP_PARSE_DONE;
	if (!p->started)
		return HTTP_PARSE_AGAIN;
	if (llhttp_get_errno(&p->ll) == HPE_PAUSED) {
		p->pause_why = PAUSE_NONE;
		llhttp_resume(&p->ll);
	}
	e = llhttp_finish(&p->ll);
	if (e == HPE_PAUSED && p->phase == HP_DONE)
		return HTTP_PARSE_DONE;
	if (p->phase == HP_DONE) /* finish without a pause */
		return HTTP_PARSE_DONE;
	if (e == HPE_OK)
		return HTTP_PARSE_AGAIN;
	return set_error(p, 400, "connection closed inside a message");
}

int http_parser_status(const struct http_parser *p)
{
	return p->phase == HP_ERROR ? p->status : 0;
}

const char *http_parser_reason(const struct http_parser *p)
{
	return p->phase == HP_ERROR && p->reason ? p->reason : "";
}

void http_parser_fail(struct http_parser *p, int status, const char *reason)
{
	p->status = 0;
	set_error(p, status, reason);
}

int http_parser_in_message(const struct http_parser *p)
{
	return p->started && p->phase != HP_DONE && p->phase != HP_ERROR;
}

int http_parser_in_headers(const struct http_parser *p)
{
	return p->phase == HP_HEADERS;
}

int http_parser_is_done(const struct http_parser *p)
{
	return p->phase == HP_DONE;
}

struct http_msg *http_parser_msg(struct http_parser *p)
{
	return &p->msg;
}

void http_parser_set_body_limit(struct http_parser *p, uint64_t limit)
{
	p->body_limit = limit;
}

void http_parser_expect_no_body(struct http_parser *p)
{
	p->expect_no_body = 1;
}

/* The lower-case copy of name (at most cap - 1 bytes; longer: 0). */
static size_t lower_name(const char *name, char *out, size_t cap)
{
	size_t n = 0;

	for (; name[n]; n++) {
		unsigned char c = (unsigned char)name[n];

		if (n + 1 >= cap)
			return 0;
		out[n] = (char)(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
	}
	return n;
}

const struct str *http_msg_header(const struct http_msg *m, const char *name)
{
	char low[64];
	size_t len = lower_name(name, low, sizeof(low)), i;

	if (!len) {
		struct str n = str_c(name); /* empty, or too long for the fast path */

		for (i = 0; i < m->nheaders; i++)
			if (str_caseeq(m->headers[i].name, n))
				return &m->headers[i].value;
		return NULL;
	}
	for (i = 0; i < m->nheaders; i++)
		if (http_name_eq(m->headers[i].name, low, len))
			return &m->headers[i].value;
	return NULL;
}

int http_token_list_has(struct str list, struct str token)
{
	const char *s = list.p, *e = list.p + list.len;

	while (s < e) {
		const char *c = memchr(s, ',', (size_t)(e - s));
		const char *end = c ? c : e;

		if (str_caseeq(str_trim(str_make(s, (size_t)(end - s))), token))
			return 1;
		s = c ? c + 1 : e;
	}
	return 0;
}

int http_msg_header_has_token(const struct http_msg *m, const char *name, const char *token)
{
	struct str n = str_c(name), t = str_c(token);
	size_t i;

	for (i = 0; i < m->nheaders; i++)
		if (m->headers[i].name.len == n.len && str_caseeq(m->headers[i].name, n) &&
		    http_token_list_has(m->headers[i].value, t))
			return 1;
	return 0;
}

const char *http_status_text(int status)
{
	switch (status) {
	case 100:
		return "Continue";
	case 200:
		return "OK";
	case 201:
		return "Created";
	case 202:
		return "Accepted";
	case 204:
		return "No Content";
	case 206:
		return "Partial Content";
	case 301:
		return "Moved Permanently";
	case 302:
		return "Found";
	case 303:
		return "See Other";
	case 304:
		return "Not Modified";
	case 307:
		return "Temporary Redirect";
	case 308:
		return "Permanent Redirect";
	case 400:
		return "Bad Request";
	case 401:
		return "Unauthorized";
	case 403:
		return "Forbidden";
	case 404:
		return "Not Found";
	case 405:
		return "Method Not Allowed";
	case 408:
		return "Request Timeout";
	case 409:
		return "Conflict";
	case 411:
		return "Length Required";
	case 412:
		return "Precondition Failed";
	case 413:
		return "Content Too Large";
	case 414:
		return "URI Too Long";
	case 415:
		return "Unsupported Media Type";
	case 422:
		return "Unprocessable Content";
	case 429:
		return "Too Many Requests";
	case 431:
		return "Request Header Fields Too Large";
	case 500:
		return "Internal Server Error";
	case 501:
		return "Not Implemented";
	case 502:
		return "Bad Gateway";
	case 503:
		return "Service Unavailable";
	case 504:
		return "Gateway Timeout";
	case 505:
		return "HTTP Version Not Supported";
	default:
		return "Unknown";
	}
}

const char *http_status_code_name(int status)
{
	switch (status) {
	case 400:
		return "bad_request";
	case 401:
		return "unauthorized";
	case 403:
		return "forbidden";
	case 404:
		return "not_found";
	case 408:
		return "request_timeout";
	case 413:
		return "payload_too_large";
	case 429:
		return "too_many_requests";
	case 431:
		return "header_too_large";
	case 501:
		return "not_implemented";
	case 502:
		return "bad_gateway";
	case 503:
		return "unavailable";
	case 504:
		return "gateway_timeout";
	case 505:
		return "version_not_supported";
	default:
		return status >= 500 ? "internal" : "error";
	}
}

/* --- the pure helper --------------------------------------------------- */

struct pb_state {
	struct buf body;
	size_t cap;
};

static int pb_on_headers(struct http_parser *p, struct http_msg *msg, void *data)
{
	struct pb_state *st = data;

	http_parser_set_body_limit(p, st->cap);
	return 0;
}

static int pb_on_body(struct http_parser *p, const char *at, size_t len, void *data)
{
	struct pb_state *st = data;

	if (buf_append(&st->body, at, len) != 0)
		return 413;
	return 0;
}

static const struct http_parser_cbs pb_cbs = {
    .on_headers = pb_on_headers,
    .on_body = pb_on_body,
};

int http_parse_buffer(enum http_parser_kind kind, const struct http_limits *lim, const char *data,
                      size_t len, size_t step, size_t body_cap, http_parse_visit_fn visit, void *ud,
                      size_t *nmsgs)
{
	struct http_parser p;
	struct pb_state st;
	struct buf in;
	size_t fed = 0, count = 0;
	int ret = 0;

	if (body_cap == 0)
		body_cap = 1 << 20;
	if (step == 0)
		step = len ? len : 1;
	st.cap = body_cap;
	buf_init(&st.body, body_cap);
	buf_init(&in, len + 1);
	http_parser_init(&p, kind, lim, &pb_cbs, &st);

	for (;;) {
		size_t used = 0, n;
		int rc = http_parser_feed(&p, in.data ? buf_head(&in) : "", buf_used(&in), &used);

		buf_consume(&in, used);
		if (rc == HTTP_PARSE_ERROR) {
			ret = http_parser_status(&p);
			break;
		}
		if (rc == HTTP_PARSE_DONE) {
			count++;
			if (visit)
				visit(ud, http_parser_msg(&p),
				      st.body.data ? buf_head(&st.body) : "", buf_used(&st.body));
			buf_reset(&st.body);
			http_parser_next(&p);
			continue;
		}
		/* everything given was consumed: deliver the next slice */
		if (fed >= len) {
			ret = http_parser_in_message(&p) ? 1 : 0;
			break;
		}
		n = len - fed < step ? len - fed : step;
		if (buf_append(&in, data + fed, n) != 0) {
			ret = 500;
			break;
		}
		fed += n;
	}
	if (nmsgs)
		*nmsgs = count;
	http_parser_release(&p);
	buf_release(&in);
	buf_release(&st.body);
	return ret;
}
