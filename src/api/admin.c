#include "api/admin.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "http/server.h"

#define ADMIN_MAX_BODY (1u << 20)
#define ADMIN_CSP                                                                       \
	"default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; " \
	"img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

struct admin {
	struct http_server *srv;
	struct api *api;
	void (*done)(void *arg);
	void *done_arg;
};

static struct str header_or_empty(const struct http_msg *m, const char *name)
{
	const struct str *v = http_msg_header(m, name);

	return v ? *v : STR_NULL;
}

static void admin_on_request(struct http_conn *c, const struct http_msg *req, struct str body,
                             void *data)
{
	struct admin *a = data;
	struct api_request ar = {
	    .method = req->method,
	    .path = req->path,
	    .query = req->query,
	    .authorization = header_or_empty(req, "authorization"),
	    .if_none_match = header_or_empty(req, "if-none-match"),
	    .last_event_id = header_or_empty(req, "last-event-id"),
	    .body = body,
	};
	struct api_response resp;
	struct http_header hdrs[7];
	size_t nh = 0;

	api_response_init(&resp);
	api_handle(a->api, &ar, &resp);
	if (resp.stream) {
		/* the handler keeps the connection; admin_on_close tells it when it goes */
		http_conn_set_udata(c, resp.stream);
		resp.stream->start(resp.stream, c);
		api_response_release(&resp);
		return;
	}
	hdrs[nh++] = (struct http_header){STR_LIT("Content-Type"), str_c(resp.content_type)};
	hdrs[nh++] = (struct http_header){
	    STR_LIT("Cache-Control"), str_c(resp.cache_control ? resp.cache_control : "no-store")};
	/* on every answer: the dashboard's policy (docs/dashboard.md) fits JSON too */
	hdrs[nh++] = (struct http_header){STR_LIT("Content-Security-Policy"), STR_LIT(ADMIN_CSP)};
	hdrs[nh++] = (struct http_header){STR_LIT("X-Content-Type-Options"), STR_LIT("nosniff")};
	hdrs[nh++] = (struct http_header){STR_LIT("Referrer-Policy"), STR_LIT("no-referrer")};
	if (resp.etag[0])
		hdrs[nh++] = (struct http_header){STR_LIT("ETag"), str_c(resp.etag)};
	http_conn_respond(c, resp.status, hdrs, nh, buf_head(&resp.body),
	                  resp.status == 304 ? 0 : buf_used(&resp.body));
	api_response_release(&resp);
}

static void admin_on_close(struct http_conn *c, void *data)
{
	struct api_stream *s = http_conn_udata(c);

	if (s)
		s->closed(s);
}

struct admin *admin_start(struct loop *loop, const char *addr, struct api *api,
                          struct tls_server *tls, char *err, size_t errlen)
{
	struct http_server_config cfg = {.max_body_bytes = ADMIN_MAX_BODY};
	struct http_handler h = {.on_request = admin_on_request, .on_close = admin_on_close};
	struct admin *a = calloc(1, sizeof(*a));
	int fd, rc;

	if (!a) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	a->api = api;
	h.data = a;
	fd = http_listen(addr, 0);
	if (fd < 0) {
		snprintf(err, errlen, "cannot listen on %s: %s", addr, strerror(-fd));
		goto out_free;
	}
	a->srv = http_server_new(loop, &cfg, &h);
	if (!a->srv) {
		snprintf(err, errlen, "out of memory");
		goto out_close;
	}
	http_server_set_tls(a->srv, tls);
	rc = http_server_add_listener(a->srv, fd);
	if (rc) {
		snprintf(err, errlen, "cannot accept on %s: %s", addr, strerror(-rc));
		http_server_free(a->srv);
		goto out_free;
	}
	return a;

out_close:
	close(fd);
out_free:
	free(a);
	return NULL;
}

void admin_set_tls(struct admin *a, struct tls_server *tls)
{
	http_server_set_tls(a->srv, tls);
}

static void admin_drained(struct http_server *s, void *data)
{
	struct admin *a = data;

	if (a->done)
		a->done(a->done_arg);
}

void admin_shutdown(struct admin *a, void (*done)(void *arg), void *arg)
{
	a->done = done;
	a->done_arg = arg;
	http_server_shutdown(a->srv, admin_drained, a);
}

void admin_free(struct admin *a)
{
	if (!a)
		return;
	http_server_free(a->srv);
	free(a);
}
