/*
 * parser.h - incremental HTTP/1.1 message parser: llhttp 8.1 (strict mode)
 * plus canaryd's own checks (SPEC section 4, docs/http.md).
 *
 * One parser per connection, for requests (server side) or responses
 * (upstream client side).  The caller owns the input bytes; the parser copies
 * the header section into its own bounded per-message buffer, so every
 * struct str in a struct http_msg points into parser memory and stays valid
 * until http_parser_next() (or release).  Body bytes are never copied: they
 * are handed to on_body as pointers into the caller's input, chunked framing
 * already removed.
 *
 * Flow:  feed() -> on_headers -> on_body* -> on_complete -> feed() returns
 * HTTP_PARSE_DONE and stops (pipelined bytes after the message are left
 * unconsumed) -> the caller handles the message -> http_parser_next() ->
 * feed() the rest.  Any error is sticky and carries the status to send.
 *
 * The parser does no I/O and never touches the event loop.
 */
#ifndef HTTP_PARSER_H
#define HTTP_PARSER_H

#include <stddef.h>
#include <stdint.h>

#include <llhttp.h>

#include "core/buf.h"
#include "core/str.h"

#define HTTP_DEFAULT_MAX_HEADER_BYTES 32768
#define HTTP_DEFAULT_MAX_HEADERS      100

enum http_parser_kind {
	HTTP_PARSE_REQUEST = 0,
	HTTP_PARSE_RESPONSE = 1,
};

/* Well-known methods; anything else llhttp accepts is HTTP_M_OTHER. */
enum http_method {
	HTTP_M_OTHER = 0,
	HTTP_M_GET,
	HTTP_M_HEAD,
	HTTP_M_POST,
	HTTP_M_PUT,
	HTTP_M_DELETE,
	HTTP_M_PATCH,
	HTTP_M_OPTIONS,
	HTTP_M_CONNECT,
	HTTP_M_TRACE,
};

/* Return values of http_parser_feed(). */
enum http_parse_rc {
	HTTP_PARSE_ERROR = -1, /* see http_parser_status() / http_parser_reason() */
	HTTP_PARSE_AGAIN = 0,  /* every byte consumed; more are needed */
	HTTP_PARSE_DONE = 1,   /* one message complete; parser stopped after it */
	HTTP_PARSE_PAUSED = 2, /* on_body returned HTTP_PARSER_PAUSE */
};

/* on_body may return this to stop the parser after the current chunk. */
#define HTTP_PARSER_PAUSE 1

struct http_limits {
	size_t max_header_bytes; /* raw header section incl. start line; 0: 32768 */
	size_t max_headers;      /* header lines; 0: 100 */
};

struct http_header {
	struct str name;
	struct str value; /* optional whitespace trimmed */
};

/*
 * One parsed message.  Filled when the header section is complete; the
 * strings point into the parser and live until http_parser_next().
 */
struct http_msg {
	/* requests */
	enum http_method method_id;
	struct str method; /* static storage */
	struct str target; /* request-target as sent */
	struct str path;   /* target without the query (absolute-form: the path part) */
	struct str query;  /* after '?', without it; empty if none */
	/* Host value, empty if absent (HTTP/1.0); for an absolute-form target
	 * the target's authority, which replaces Host (RFC 9112 3.2.2) */
	struct str host;
	int absolute_form; /* target is "http(s)://authority/path": forward path and query */
	/* responses */
	int status;
	struct str reason;
	/* both */
	int version; /* 10 or 11 */
	struct http_header *headers;
	size_t nheaders;
	int keep_alive;          /* the connection may carry another message */
	int chunked;             /* Transfer-Encoding: chunked */
	int has_content_length;  /* Content-Length present */
	uint64_t content_length; /* its value */
	int no_body;             /* the message has no body (response to HEAD, 204, 304, 1xx) */
};

struct http_parser;

struct http_parser_cbs {
	/*
	 * The header section is complete and msg is filled.  Return 0 to go on,
	 * or a status >= 400 to fail the message with it.  May call
	 * http_parser_set_body_limit().  Optional.
	 */
	int (*on_headers)(struct http_parser *p, struct http_msg *msg, void *data);
	/*
	 * A piece of decoded body; p points into the caller's input and is valid
	 * during the call only.  Return 0, HTTP_PARSER_PAUSE, or a status >= 400.
	 * Optional (the body is then dropped).
	 */
	int (*on_body)(struct http_parser *p, const char *at, size_t len, void *data);
	/* The message is complete.  Return 0 or a status >= 400.  Optional. */
	int (*on_complete)(struct http_parser *p, struct http_msg *msg, void *data);
};

/* Private state hidden behind the struct so it can be embedded. */
struct http_hoff {
	uint32_t no, nl, vo, vl;
};

/* Chunk-line tracker: where chunk extensions are, so they can be skipped. */
struct http_chunk_scan {
	int st;          /* CK_* in parser.c */
	int est;         /* extension grammar state */
	unsigned digits; /* hex digits of the size so far */
	uint64_t size;   /* the chunk size being read */
	uint64_t left;   /* data bytes of the current chunk not yet seen */
	size_t ext_len;  /* extension bytes on this line (capped) */
};

struct http_parser {
	llhttp_t ll;
	enum http_parser_kind kind;
	struct http_limits lim;
	const struct http_parser_cbs *cbs;
	void *data;

	struct buf hbuf; /* target, reason, header names and values */
	struct http_hoff *offs;
	struct http_header *hdrs;
	size_t nhdr, hdr_cap;
	uint32_t url_off, url_len, reason_off, reason_len;
	int in_field;
	size_t name_len; /* bytes of the header or trailer name being read */
	unsigned n_host, n_cl, n_te;
	uint32_t te_idx, host_idx; /* the (last) Transfer-Encoding / Host line */

	struct http_msg msg;
	int phase;        /* HP_* in parser.c */
	int pause_why;    /* why llhttp returned HPE_PAUSED */
	int scan;         /* raw header scanner state */
	size_t hdr_bytes; /* raw header bytes consumed for this message */
	size_t trl_bytes; /* raw trailer field/value bytes */
	uint64_t body_bytes;
	uint64_t body_limit; /* 0: none */
	int expect_no_body;
	int started; /* a byte of this message was consumed */
	struct http_chunk_scan ck;

	int status;         /* error status once phase is HP_ERROR */
	const char *reason; /* static error text */
};

/*
 * Initialises p for kind.  lim may be NULL (defaults); cbs may be NULL and
 * must outlive p.  Allocates nothing until the first header arrives.
 */
void http_parser_init(struct http_parser *p, enum http_parser_kind kind,
                      const struct http_limits *lim, const struct http_parser_cbs *cbs, void *data);
/* Frees the parser's memory; p can be re-initialised afterwards. */
void http_parser_release(struct http_parser *p);

/*
 * Parses up to len bytes of data.  *consumed is set to the bytes used; the
 * caller drops them and keeps the rest (which start the next message after
 * HTTP_PARSE_DONE, or are body bytes after HTTP_PARSE_PAUSED).
 * After HTTP_PARSE_DONE call http_parser_next(); after HTTP_PARSE_PAUSED call
 * http_parser_resume(); until then feed() consumes nothing and repeats the
 * same answer.  HTTP_PARSE_ERROR is sticky.
 */
int http_parser_feed(struct http_parser *p, const char *data, size_t len, size_t *consumed);

/* Forgets the finished message and gets ready for the next one. */
void http_parser_next(struct http_parser *p);
/* Continues after HTTP_PARSE_PAUSED. */
void http_parser_resume(struct http_parser *p);

/*
 * Tells the parser the peer closed.  Returns HTTP_PARSE_DONE when that ends
 * a message (a response delimited by EOF; on_complete ran), HTTP_PARSE_AGAIN
 * when no message was in progress, HTTP_PARSE_ERROR when one was cut short.
 */
int http_parser_finish(struct http_parser *p);

/* Error status (400, 408, 413, 431, 501, 505) after HTTP_PARSE_ERROR, else 0. */
int http_parser_status(const struct http_parser *p);
/* Static human text for the error, "" if none. */
const char *http_parser_reason(const struct http_parser *p);
/* Puts the parser in the error state with status (e.g. 408 on a timeout). */
void http_parser_fail(struct http_parser *p, int status, const char *reason);

/* 1 once any byte of the current message was consumed and it is not done. */
int http_parser_in_message(const struct http_parser *p);
/* 1 while the header section of the current message is incomplete. */
int http_parser_in_headers(const struct http_parser *p);
/* 1 between DONE and http_parser_next(). */
int http_parser_is_done(const struct http_parser *p);
/* The current message; valid from on_headers until http_parser_next(). */
struct http_msg *http_parser_msg(struct http_parser *p);

/*
 * Caps the decoded body of the current message: a Content-Length above it
 * fails at once, a chunked body when it crosses it; status 413.  0: no cap.
 * Call from on_headers (or before the body starts).
 */
void http_parser_set_body_limit(struct http_parser *p, uint64_t limit);
/*
 * Response parsers: the next response has no body whatever its headers say
 * (it answers a HEAD request).  Cleared by http_parser_next().
 */
void http_parser_expect_no_body(struct http_parser *p);
/* Frees idle storage (between messages) to keep idle connections small. */
void http_parser_shrink(struct http_parser *p);
/*
 * As http_parser_shrink(), but only when the header store has grown past
 * keep bytes: a connection that goes idle often keeps its small store and
 * the next message allocates nothing.
 */
void http_parser_trim(struct http_parser *p, size_t keep);

/*
 * 1 if the header name equals lower[0..len) (an ASCII lower-case name)
 * ignoring ASCII case: lengths first, no locale (strncasecmp is both
 * locale-aware and called per header on the proxy's hot path).
 */
static inline int http_name_eq(struct str name, const char *lower, size_t len)
{
	if (name.len != len)
		return 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name.p[i];

		if (c >= 'A' && c <= 'Z')
			c = (unsigned char)(c + ('a' - 'A'));
		if (c != (unsigned char)lower[i])
			return 0;
	}
	return 1;
}
/* http_name_eq() with a string literal. */
#define http_name_eq_lit(name, lit) http_name_eq((name), "" lit, sizeof(lit) - 1)

/* First header named name (case-insensitive), or NULL. */
const struct str *http_msg_header(const struct http_msg *m, const char *name);
/* 1 if the comma-separated header name contains token (case-insensitive). */
int http_msg_header_has_token(const struct http_msg *m, const char *name, const char *token);
/* 1 if the comma-separated list (one header value) holds token, OWS and case ignored. */
int http_token_list_has(struct str list, struct str token);

/* The reason phrase for a status code ("Not Found"), "Unknown" if unknown. */
const char *http_status_text(int status);
/* A short machine code for an error status: "bad_request", "too_large"... */
const char *http_status_code_name(int status);

/*
 * Pure helper for tests and fuzzing: parses a whole byte string as a series
 * of messages, feeding it step bytes at a time (0: all at once) through a
 * connection-like buffer, exactly as a connection would.  visit (optional)
 * is called for each complete message with its body (buffered, at most
 * body_cap bytes; more fails with 413; body_cap 0 means 1 MiB).
 * Returns 0 when the input ended on a message boundary, 1 when it ended
 * inside a message, or the error status (>= 400).  *nmsgs (optional) gets
 * the count of complete messages.
 */
typedef void (*http_parse_visit_fn)(void *ud, const struct http_msg *msg, const char *body,
                                    size_t body_len);
int http_parse_buffer(enum http_parser_kind kind, const struct http_limits *lim, const char *data,
                      size_t len, size_t step, size_t body_cap, http_parse_visit_fn visit, void *ud,
                      size_t *nmsgs);

#endif
