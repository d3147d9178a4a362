/*
 * config.c - loading: the top level, admin, store, listeners and services,
 * and the --check summary.  Segments and flags are in config_flag.c,
 * rollouts in config_rollout.c, the lookups they all use in config_find.c
 * (below every other file of the module, so no call goes back up here).
 *
 * Sections are parsed in dependency order (admin, segments, services,
 * listeners, flags, rollouts) whatever their order in the file, so every
 * cross-reference is checked where its node -- and so its line -- is at hand.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "config/config_internal.h"
#include "store/store.h"

#define CONFIG_FILE_MAX (16u << 20)
#define SECRET_FILE_MAX (64u << 10)

/* --- admin ------------------------------------------------------------------ */

static const struct {
	const char *name;
	unsigned bit;
} scope_names[] = {
    {"read", CONFIG_SCOPE_READ},
    {"flags:write", CONFIG_SCOPE_FLAGS_WRITE},
    {"rollouts:write", CONFIG_SCOPE_ROLLOUTS_WRITE},
    {"approve", CONFIG_SCOPE_APPROVE},
    {"evaluate", CONFIG_SCOPE_EVALUATE},
    {"admin", CONFIG_SCOPE_ADMIN},
};

static bool token_scopes(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_token *t = obj;
	struct config_strlist l = {0};
	char sub[PATH_MAX_LEN];
	bool ok = true;

	if (!get_strlist(c, n, path, false, &l))
		return false;
	if (l.n == 0) {
		cerr(c, n->line, path, "at least one scope is required");
		return false;
	}
	for (size_t i = 0; i < l.n; i++) {
		size_t k;

		for (k = 0; k < sizeof(scope_names) / sizeof(scope_names[0]); k++)
			if (strcmp(l.v[i], scope_names[k].name) == 0)
				break;
		if (k == sizeof(scope_names) / sizeof(scope_names[0])) {
			path_idx(sub, path, i);
			cerr(c, n->type == CN_SEQ ? n->items[i]->line : n->line,
			     n->type == CN_SEQ ? sub : path,
			     "unknown scope \"%s\" (read, flags:write, rollouts:write, approve, "
			     "evaluate, admin)",
			     l.v[i]);
			ok = false;
			continue;
		}
		t->scopes |= scope_names[k].bit;
	}
	return ok;
}

/* Reads the secret now: a missing file is a config error, not a runtime surprise. */
static bool token_secret_file(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_token *t = obj;
	char buf[SECRET_FILE_MAX + 1], full[4096];
	const char *file;
	size_t len;
	FILE *fp;

	if (!get_str(c, n, path, &t->secret_file))
		return false;
	file = t->secret_file;
	if (file[0] != '/' && c->base_dir) {
		snprintf(full, sizeof(full), "%s/%s", c->base_dir, file);
		file = full;
	}
	fp = fopen(file, "r");
	if (!fp) {
		cerr(c, n->line, path, "cannot read \"%s\": %s", file, strerror(errno));
		return false;
	}
	len = fread(buf, 1, sizeof(buf), fp);
	if (ferror(fp)) {
		cerr(c, n->line, path, "cannot read \"%s\": %s", file, strerror(errno));
		fclose(fp);
		return false;
	}
	fclose(fp);
	if (len > SECRET_FILE_MAX) {
		cerr(c, n->line, path, "\"%s\" is larger than %u bytes", file, SECRET_FILE_MAX);
		return false;
	}
	while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
		len--;
	if (memchr(buf, '\0', len) || memchr(buf, '\n', len)) {
		cerr(c, n->line, path, "\"%s\" must hold the secret on a single line", file);
		return false;
	}
	t->secret = cfg_arena_strndup(c->out, buf, len);
	if (t->secret)
		cnode_redact_secret(c, NULL, t->secret);
	return t->secret != NULL;
}

/* An inline secret: never shown in config snapshots. */
static bool token_secret(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_token *t = obj;

	if (!get_str(c, n, path, &t->secret))
		return false;
	cnode_redact_secret(c, n, t->secret);
	return true;
}

static const struct field token_fields[] = {
    FLD_REQ("name", FK_NAME, struct config_token, name),
    FLD_FN("secret", token_secret),
    FLD_FN("secret_file", token_secret_file),
    FLD_FN("scopes", token_scopes),
};

static bool admin_tokens(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_admin *a = obj;
	char sub[PATH_MAX_LEN];

	if (!want_seq(c, n, path))
		return false;
	a->tokens = cfg_arena_alloc(c->out, (n->n ? n->n : 1) * sizeof(*a->tokens));
	if (!a->tokens)
		return false;
	a->ntokens = n->n;
	for (size_t i = 0; i < n->n; i++) {
		struct config_token *t = &a->tokens[i];
		const struct cnode *tn = n->items[i];
		uint64_t seen; /* bits of token_fields: 1 name, 2 secret, 4 secret_file, 8 scopes */

		path_idx(sub, path, i);
		t->line = tn->line;
		if (!walk_map(c, tn, sub, token_fields, NFIELDS(token_fields), t, &seen))
			continue;
		if ((seen & 2) && (seen & 4))
			cerr(c, tn->line, sub, "secret and secret_file are mutually exclusive");
		else if (!(seen & 6))
			cerr(c, tn->line, sub,
			     "missing required key \"secret\" (or \"secret_file\")");
		else if (t->secret && !*t->secret)
			cerr(c, key_line(tn, (seen & 2) ? "secret" : "secret_file"), sub,
			     "the secret is empty");
		if (!(seen & 8))
			cerr(c, tn->line, sub, "missing required key \"scopes\"");
		for (size_t j = 0; j < i; j++) {
			const struct config_token *o = &a->tokens[j];

			if (t->name && o->name && strcmp(t->name, o->name) == 0) {
				char np[PATH_MAX_LEN];

				path_key(np, sub, "name");
				cerr(c, key_line(tn, "name"), np,
				     "duplicate token name \"%s\" (also tokens[%zu])", t->name, j);
			} else if (t->secret && o->secret && *t->secret &&
			           strcmp(t->secret, o->secret) == 0) {
				cerr(c, tn->line, sub, "same secret as tokens[%zu] (\"%s\")", j,
				     o->name ? o->name : "");
			}
		}
	}
	return true;
}

static bool admin_tls(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	return parse_tls(c, n, path, &((struct config_admin *)obj)->tls);
}

static const struct field admin_fields[] = {
    FLD("listen", FK_ADDR, struct config_admin, listen),
    FLD_FN("tls", admin_tls),
    FLD_FN("tokens", admin_tokens),
    FLD("public_read", FK_BOOL, struct config_admin, public_read),
    FLD("evaluate_public", FK_BOOL, struct config_admin, evaluate_public),
};

/* --- store, workers, metrics ------------------------------------------------------ */

static bool parse_store(struct cctx *c, const struct cnode *n, const char *path,
                        struct config_store *st)
{
	const char *t = get_text(c, n, path);
	char shown[512];

	if (!t)
		return false;
	st->line = n->line;
	cnode_redact_url(c, n, t);
	if (strncmp(t, "sqlite:", 7) == 0 && t[7]) {
		st->kind = CONFIG_STORE_SQLITE;
		st->url = cfg_arena_strdup(c->out, t);
		st->path = st->url ? st->url + 7 : NULL;
		return st->url != NULL;
	}
	if ((strncmp(t, "postgres://", 11) == 0 && t[11]) ||
	    (strncmp(t, "postgresql://", 13) == 0 && t[13])) {
		/* What libpq cannot parse fails here, not at open (never shows a password). */
		if (store_url_check(t, shown, sizeof(shown)) != 0) {
			const char *m = shown;

			if (strncmp(m, "store: ", 7) == 0)
				m += 7; /* the path already says it */
			cerr(c, n->line, path, "%s", m);
			return false;
		}
		st->kind = CONFIG_STORE_POSTGRES;
		st->url = cfg_arena_strdup(c->out, t);
		st->path = st->url;
		return st->url != NULL;
	}
	config_url_redact(t, shown, sizeof(shown)); /* it may carry a password */
	cerr(c, n->line, path, "expected sqlite:PATH or postgres://..., got \"%.100s\"", shown);
	return false;
}

static bool parse_workers(struct cctx *c, const struct cnode *n, const char *path, uint32_t *w)
{
	const char *t = n->type == CN_SCALAR ? get_text(c, n, path) : "";

	if (!t)
		return false;
	if (strcmp(t, "auto") == 0) {
		*w = 0;
		return true;
	}
	return get_u32(c, n, path, 1, 256, w);
}

/* `io: auto | epoll | uring` (src/core/uring.h; docs/proxy.md "I/O path") */
static bool parse_io(struct cctx *c, const struct cnode *n, const char *path, enum config_io *io)
{
	static const char *const names[] = {"epoll", "auto", "uring"};
	const char *t = n->type == CN_SCALAR ? get_text(c, n, path) : NULL;

	if (n->type != CN_SCALAR) {
		cerr(c, n->line, path, "expected auto, epoll or uring");
		return false;
	}
	if (!t)
		return false;
	for (int k = 0; k < 3; k++) {
		if (strcmp(t, names[k]) == 0) {
			*io = (enum config_io)k;
			return true;
		}
	}
	cerr(c, n->line, path, "expected auto, epoll or uring, got \"%.100s\"", t);
	return false;
}

static const struct field metrics_fields[] = {
    FLD("prometheus", FK_URL, struct config, metrics.prometheus),
};

/* --- listeners ---------------------------------------------------------------------- */

/* A Host to match: a hostname, optionally "*." in front. */
static bool route_host(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_route *r = obj;
	const char *t = get_text(c, n, path), *h;
	struct config_addr tmp;

	if (!t)
		return false;
	h = strncmp(t, "*.", 2) == 0 ? t + 2 : t;
	if (strcmp(h, "*") != 0) {
		char probe[300];

		snprintf(probe, sizeof(probe), "%s:1", h);
		if (strlen(h) > 253 || config_parse_addr(probe, &tmp, NULL) != 0 ||
		    tmp.family == AF_INET6) {
			cerr(c, n->line, path, "invalid host \"%.100s\"", t);
			return false;
		}
		r->host = cfg_arena_strdup(c->out, t);
	}
	return true;
}

static bool route_prefix(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_route *r = obj;

	if (!get_str(c, n, path, &r->path_prefix))
		return false;
	if (r->path_prefix[0] != '/') {
		cerr(c, n->line, path, "must start with \"/\"");
		return false;
	}
	return true;
}

static const struct field match_fields[] = {
    FLD_FN("host", route_host),
    FLD_FN("path_prefix", route_prefix),
};

static bool route_match(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	return walk_map(c, n, path, match_fields, NFIELDS(match_fields), obj, NULL);
}

static bool route_service(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_route *r = obj;

	if (!get_name(c, n, path, &r->service))
		return false;
	r->svc = config_service_find(c->cfg, r->service);
	if (!r->svc) {
		cerr(c, n->line, path, "service \"%s\" is not defined", r->service);
		return false;
	}
	return true;
}

static const struct field route_fields[] = {
    FLD_FN("match", route_match),
    FLD_FN_REQ("service", route_service),
};

static bool listener_routes(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_listener *l = obj;
	char sub[PATH_MAX_LEN];

	if (!want_seq(c, n, path))
		return false;
	l->routes = cfg_arena_alloc(c->out, (n->n ? n->n : 1) * sizeof(*l->routes));
	if (!l->routes)
		return false;
	l->nroutes = n->n;
	for (size_t i = 0; i < n->n; i++) {
		l->routes[i].path_prefix = "/";
		l->routes[i].line = n->items[i]->line;
		path_idx(sub, path, i);
		walk_map(c, n->items[i], sub, route_fields, NFIELDS(route_fields), &l->routes[i],
		         NULL);
	}
	if (n->n == 0)
		cerr(c, n->line, path, "at least one route is required");
	return true;
}

static bool listener_tls(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	return parse_tls(c, n, path, &((struct config_listener *)obj)->tls);
}

static const struct field listener_fields[] = {
    FLD_REQ("name", FK_NAME, struct config_listener, name),
    FLD_REQ("listen", FK_ADDR, struct config_listener, listen),
    FLD_FN_REQ("routes", listener_routes),
    FLD_FN("tls", listener_tls),
};

static bool same_addr(const struct config_addr *a, const struct config_addr *b)
{
	return a->port == b->port && a->port != 0 && strcasecmp(a->host, b->host) == 0;
}

static void parse_listeners(struct cctx *c, const struct cnode *n, const char *path)
{
	struct config *cfg = c->cfg;
	char sub[PATH_MAX_LEN], kp[PATH_MAX_LEN];

	if (!want_seq(c, n, path))
		return;
	cfg->listeners = cfg_arena_alloc(c->out, (n->n ? n->n : 1) * sizeof(*cfg->listeners));
	if (!cfg->listeners)
		return;
	cfg->nlisteners = n->n;
	for (size_t i = 0; i < n->n; i++) {
		struct config_listener *l = &cfg->listeners[i];
		const struct cnode *ln = n->items[i];

		path_idx(sub, path, i);
		l->line = ln->line;
		if (!walk_map(c, ln, sub, listener_fields, NFIELDS(listener_fields), l, NULL))
			continue;
		path_key(kp, sub, "listen");
		if (same_addr(&l->listen, &cfg->admin.listen))
			cerr(c, key_line(ln, "listen"), kp, "address already used by admin.listen");
		for (size_t j = 0; j < i; j++) {
			const struct config_listener *o = &cfg->listeners[j];

			if (l->name && o->name && strcmp(l->name, o->name) == 0) {
				path_key(kp, sub, "name");
				cerr(c, key_line(ln, "name"), kp,
				     "duplicate listener name \"%s\" (also listeners[%zu])",
				     l->name, j);
			}
			if (same_addr(&l->listen, &o->listen)) {
				path_key(kp, sub, "listen");
				cerr(c, key_line(ln, "listen"), kp,
				     "address already used by listeners[%zu]", j);
			}
		}
	}
}

/* --- services ------------------------------------------------------------------------ */

static bool header_token(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr("!#$%&'*+-.^_`|~", *s))
			return false;
	return true;
}

/* header:NAME | cookie:NAME | ip | none (| query:NAME when allow_query). */
static bool parse_keysrc(struct cctx *c, const struct cnode *n, const char *path, bool allow_query,
                         struct config_keysrc *k)
{
	const char *t = get_text(c, n, path);
	const char *arg = NULL;

	if (!t)
		return false;
	if (strcmp(t, "ip") == 0) {
		k->kind = CONFIG_KEY_IP;
		return true;
	}
	if (strcmp(t, "none") == 0 && !allow_query) {
		k->kind = CONFIG_KEY_NONE;
		return true;
	}
	if (strncmp(t, "header:", 7) == 0) {
		k->kind = CONFIG_KEY_HEADER;
		arg = t + 7;
	} else if (strncmp(t, "cookie:", 7) == 0) {
		k->kind = CONFIG_KEY_COOKIE;
		arg = t + 7;
	} else if (allow_query && strncmp(t, "query:", 6) == 0) {
		k->kind = CONFIG_KEY_QUERY;
		arg = t + 6;
	}
	if (!arg || !header_token(arg)) {
		cerr(c, n->line, path, "expected %s, got \"%.100s\"",
		     allow_query ? "header:NAME, cookie:NAME, query:NAME or ip"
		                 : "header:NAME, cookie:NAME, ip or none",
		     t);
		return false;
	}
	k->name = cfg_arena_strdup(c->out, arg);
	if (k->name && k->kind == CONFIG_KEY_HEADER)
		for (char *p = (char *)k->name; *p; p++)
			*p = (char)tolower((unsigned char)*p);
	return k->name != NULL;
}

static bool version_endpoints(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_version *v = obj;
	char sub[PATH_MAX_LEN];

	if (!want_seq(c, n, path))
		return false;
	if (n->n == 0) {
		cerr(c, n->line, path, "at least one endpoint is required");
		return false;
	}
	v->endpoints = cfg_arena_alloc(c->out, n->n * sizeof(*v->endpoints));
	if (!v->endpoints)
		return false;
	v->nendpoints = n->n;
	for (size_t i = 0; i < n->n; i++) {
		path_idx(sub, path, i);
		if (!get_addr(c, n->items[i], sub, &v->endpoints[i]))
			continue;
		for (size_t j = 0; j < i; j++)
			if (same_addr(&v->endpoints[i], &v->endpoints[j]))
				cerr(c, n->items[i]->line, sub, "duplicate endpoint (also [%zu])",
				     j);
	}
	return true;
}

/* `expect:` of health: a status (200) or a range (200-399) within 100-599. */
static bool health_expect(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_health *h = obj;
	const char *t = get_text(c, n, path);
	unsigned long lo, hi;
	char *end;

	if (!t)
		return false;
	lo = strtoul(t, &end, 10);
	hi = lo;
	if (end != t && *end == '-' && isdigit((unsigned char)end[1]))
		hi = strtoul(end + 1, &end, 10);
	if (end == t || *end || !isdigit((unsigned char)*t) || lo < 100 || hi > 599 || lo > hi) {
		cerr(c, n->line, path,
		     "expected a status or a range of statuses within 100-599 like 200-399, got "
		     "\"%.40s\"",
		     t);
		return false;
	}
	h->expect_lo = (uint32_t)lo;
	h->expect_hi = (uint32_t)hi;
	return true;
}

static const struct field health_fields[] = {
    FLD("path", FK_STR, struct config_health, path),
    FLD("interval", FK_DURATION, struct config_health, interval_ms),
    FLD("timeout", FK_DURATION, struct config_health, timeout_ms),
    FLD_RANGE("healthy", FK_U32, struct config_health, healthy, 1, 1000),
    FLD_RANGE("unhealthy", FK_U32, struct config_health, unhealthy, 1, 1000),
    FLD_FN("expect", health_expect),
};

static bool version_health(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_health *h = &((struct config_version *)obj)->health;
	char sub[PATH_MAX_LEN];

	*h = (struct config_health){.enabled = true,
	                            .path = "/healthz",
	                            .interval_ms = 5000,
	                            .timeout_ms = 1000,
	                            .healthy = 2,
	                            .unhealthy = 3,
	                            .expect_lo = 200,
	                            .expect_hi = 399,
	                            .line = n->line};
	if (!walk_map(c, n, path, health_fields, NFIELDS(health_fields), h, NULL))
		return false;
	if (h->path[0] != '/' || strpbrk(h->path, " \t\r\n")) {
		path_key(sub, path, "path");
		cerr(c, key_line(n, "path"), sub, "expected a path starting with / without spaces");
	}
	if (h->interval_ms < 10) {
		path_key(sub, path, "interval");
		cerr(c, key_line(n, "interval"), sub, "must be at least 10ms");
	} else if (h->timeout_ms == 0 || h->timeout_ms >= h->interval_ms) {
		path_key(sub, path, "timeout");
		cerr(c, key_line(n, "timeout"), sub,
		     "must be above 0 and below the interval (%llums)",
		     (unsigned long long)h->interval_ms);
	}
	return true;
}

static bool version_tls(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	return parse_upstream_tls(c, n, path, &((struct config_version *)obj)->tls);
}

static const struct field version_fields[] = {
    FLD_FN_REQ("endpoints", version_endpoints),
    FLD_FN("health", version_health),
    FLD_FN("tls", version_tls),
};

static bool svc_versions(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_service *s = obj;
	char sub[PATH_MAX_LEN];
	size_t cnt = walk_named(c, n, path);

	if (n->type != CN_MAP)
		return false;
	if (cnt == 0) {
		cerr(c, n->line, path, "at least one version is required");
		return false;
	}
	s->versions = cfg_arena_alloc(c->out, cnt * sizeof(*s->versions));
	if (!s->versions)
		return false;
	s->nversions = cnt;
	for (size_t i = 0; i < cnt; i++) {
		struct config_version *v = &s->versions[i];

		v->name = cfg_arena_strdup(c->out, n->keys[i]->text);
		v->line = n->items[i]->line;
		path_key(sub, path, n->keys[i]->text);
		walk_map(c, n->items[i], sub, version_fields, NFIELDS(version_fields), v, NULL);
	}
	return true;
}

static bool svc_sticky(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	return parse_keysrc(c, n, path, false, &((struct config_service *)obj)->sticky);
}

static bool svc_context(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_service *s = obj;
	char sub[PATH_MAX_LEN];
	size_t cnt = walk_named(c, n, path);

	s->context = cfg_arena_alloc(c->out, (cnt ? cnt : 1) * sizeof(*s->context));
	if (!s->context)
		return false;
	s->ncontext = cnt;
	for (size_t i = 0; i < cnt; i++) {
		s->context[i].attr = cfg_arena_strdup(c->out, n->keys[i]->text);
		s->context[i].line = n->items[i]->line;
		path_key(sub, path, n->keys[i]->text);
		parse_keysrc(c, n->items[i], sub, true, &s->context[i].src);
	}
	return true;
}

/* {header: {name: value}} | {cookie: {name: value}} | {segment: NAME} */
static bool override_pair(struct cctx *c, const struct cnode *n, const char *path,
                          struct config_override *o, enum config_override_match kind)
{
	char sub[PATH_MAX_LEN];

	o->match = kind;
	if (!want_map(c, n, path))
		return false;
	if (n->n != 1) {
		cerr(c, n->line, path, "expected exactly one name: value pair");
		return false;
	}
	path_key(sub, path, n->keys[0]->text);
	if (!header_token(n->keys[0]->text)) {
		cerr(c, n->keys[0]->line, sub, "invalid %s name",
		     kind == CONFIG_MATCH_HEADER ? "header" : "cookie");
		return false;
	}
	o->name = cfg_arena_strdup(c->out, n->keys[0]->text);
	if (o->name && kind == CONFIG_MATCH_HEADER)
		for (char *p = (char *)o->name; *p; p++)
			*p = (char)tolower((unsigned char)*p);
	return o->name && get_str(c, n->items[0], sub, &o->value);
}

static bool om_header(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	return override_pair(c, n, path, obj, CONFIG_MATCH_HEADER);
}

static bool om_cookie(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	return override_pair(c, n, path, obj, CONFIG_MATCH_COOKIE);
}

static bool om_segment(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_override *o = obj;

	o->match = CONFIG_MATCH_SEGMENT;
	if (!get_name(c, n, path, &o->name))
		return false;
	o->segment = config_segment_find(c->cfg, o->name);
	if (!o->segment) {
		cerr(c, n->line, path, "segment \"%s\" is not defined", o->name);
		return false;
	}
	return true;
}

static const struct field omatch_fields[] = {
    FLD_FN("header", om_header),
    FLD_FN("cookie", om_cookie),
    FLD_FN("segment", om_segment),
};

static bool override_match(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	uint64_t seen;

	if (!walk_map(c, n, path, omatch_fields, NFIELDS(omatch_fields), obj, &seen))
		return false;
	if (seen != 1 && seen != 2 && seen != 4) {
		cerr(c, n->line, path, "expected exactly one of header, cookie or segment");
		return false;
	}
	return true;
}

static bool override_cohort(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_override *o = obj;
	const char *t = get_text(c, n, path);

	if (!t)
		return false;
	if (strcmp(t, "canary") == 0) {
		o->action = CONFIG_OVERRIDE_CANARY;
	} else if (strcmp(t, "stable") == 0) {
		o->action = CONFIG_OVERRIDE_STABLE;
	} else {
		cerr(c, n->line, path, "expected canary or stable, got \"%.60s\"", t);
		return false;
	}
	return true;
}

static const struct field override_fields[] = {
    FLD_FN_REQ("match", override_match),
    FLD_FN("cohort", override_cohort),
    FLD("version", FK_NAME, struct config_override, version),
};

static bool svc_overrides(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_service *s = obj;
	char sub[PATH_MAX_LEN];

	if (!want_seq(c, n, path))
		return false;
	s->overrides = cfg_arena_alloc(c->out, (n->n ? n->n : 1) * sizeof(*s->overrides));
	if (!s->overrides)
		return false;
	s->noverrides = n->n;
	for (size_t i = 0; i < n->n; i++) {
		struct config_override *o = &s->overrides[i];
		uint64_t seen;

		o->line = n->items[i]->line;
		path_idx(sub, path, i);
		if (!walk_map(c, n->items[i], sub, override_fields, NFIELDS(override_fields), o,
		              &seen))
			continue;
		if ((seen & 6) == 6)
			cerr(c, o->line, sub, "cohort and version are mutually exclusive");
		else if (!(seen & 6))
			cerr(c, o->line, sub, "missing required key \"cohort\" (or \"version\")");
		else if (seen & 4)
			o->action = CONFIG_OVERRIDE_VERSION;
	}
	return true;
}

static const struct field timeout_fields[] = {
    FLD("connect", FK_DURATION, struct config_timeouts, connect_ms),
    FLD("header", FK_DURATION, struct config_timeouts, header_ms),
    FLD("response", FK_DURATION, struct config_timeouts, response_ms),
    FLD("idle", FK_DURATION, struct config_timeouts, idle_ms),
};

static bool svc_timeouts(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_service *s = obj;
	char sub[PATH_MAX_LEN];
	const uint64_t *v = &s->timeouts.connect_ms;

	if (!walk_map(c, n, path, timeout_fields, NFIELDS(timeout_fields), &s->timeouts, NULL))
		return false;
	for (size_t i = 0; i < NFIELDS(timeout_fields); i++) {
		if (v[i] == 0) {
			path_key(sub, path, timeout_fields[i].key);
			cerr(c, key_line(n, timeout_fields[i].key), sub, "must be greater than 0");
		}
	}
	return true;
}

static const struct field outlier_fields[] = {
    FLD_RANGE("consecutive_5xx", FK_U32, struct config_outlier, consecutive_5xx, 0, 1000000),
    FLD("base_ejection", FK_DURATION, struct config_outlier, base_ejection_ms),
    FLD("max_ejected_percent", FK_PERCENT, struct config_outlier, max_ejected_percent),
};

static bool svc_outlier(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_service *s = obj;

	return walk_map(c, n, path, outlier_fields, NFIELDS(outlier_fields), &s->outlier, NULL);
}

static bool mirror_methods(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_mirror *m = obj;
	char sub[PATH_MAX_LEN];

	if (!get_strlist(c, n, path, false, &m->methods))
		return false;
	if (m->methods.n == 0 || m->methods.n > CONFIG_METHOD_MAX) {
		cerr(c, n->line, path, "expected 1 to %d methods", CONFIG_METHOD_MAX);
		return false;
	}
	for (size_t i = 0; i < m->methods.n; i++) {
		const char *s = m->methods.v[i];
		bool ok = *s != '\0';

		for (; *s; s++)
			ok &= isupper((unsigned char)*s) != 0;
		if (!ok) {
			path_idx(sub, path, i);
			cerr(c, n->type == CN_SEQ ? n->items[i]->line : n->line,
			     n->type == CN_SEQ ? sub : path,
			     "expected an upper-case HTTP method like GET, got \"%.40s\"",
			     m->methods.v[i]);
		}
	}
	return true;
}

static const struct field mirror_fields[] = {
    FLD("version", FK_NAME, struct config_mirror, version),
    FLD("percent", FK_PERCENT, struct config_mirror, percent),
    FLD_FN("methods", mirror_methods),
    FLD_RANGE("body_cap", FK_SIZE, struct config_mirror, body_cap, 0, 64u << 20),
    FLD("compare_body", FK_BOOL, struct config_mirror, compare_body),
};

static bool svc_mirror(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_service *s = obj;

	s->mirror.enabled = true;
	s->mirror.line = n->line;
	return walk_map(c, n, path, mirror_fields, NFIELDS(mirror_fields), &s->mirror, NULL);
}

static const struct field svc_fields[] = {
    FLD_FN_REQ("versions", svc_versions),
    FLD_REQ("stable", FK_NAME, struct config_service, stable),
    FLD_FN("sticky", svc_sticky),
    FLD("expose_cohort", FK_BOOL, struct config_service, expose_cohort),
    FLD_FN("context", svc_context),
    FLD_FN("overrides", svc_overrides),
    FLD_FN("timeouts", svc_timeouts),
    FLD_FN("outlier", svc_outlier),
    FLD_FN("mirror", svc_mirror),
    FLD_FN("faults", field_later), /* after the versions: parse_faults() */
    FLD("drain", FK_DURATION, struct config_service, drain_ms),
    FLD_RANGE("max_header_bytes", FK_SIZE32, struct config_service, max_header_bytes, 1024,
              1u << 20),
};

static const struct field delay_fields[] = {
    FLD_RANGE("ms", FK_U32, struct config_fault, delay_ms, 0, 3600000),
    FLD("percent", FK_PERCENT, struct config_fault, delay_percent),
};

static bool fault_delay(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_fault *f = obj;

	f->has_delay = true;
	f->delay_percent = 100000;
	return walk_map(c, n, path, delay_fields, NFIELDS(delay_fields), f, NULL);
}

static const struct field abort_fields[] = {
    FLD_RANGE("status", FK_U32, struct config_fault, abort_status, 100, 599),
    FLD("percent", FK_PERCENT, struct config_fault, abort_percent),
};

static bool fault_abort(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_fault *f = obj;

	f->has_abort = true;
	f->abort_status = 503;
	f->abort_percent = 100000;
	return walk_map(c, n, path, abort_fields, NFIELDS(abort_fields), f, NULL);
}

static const struct field fault_fields[] = {
    FLD_FN("delay", fault_delay),
    FLD_FN("abort", fault_abort),
};

/* faults: {VERSION: {delay: {ms, percent}, abort: {status, percent}}} */
static void parse_faults(struct cctx *c, const struct cnode *n, const char *path,
                         struct config_service *s)
{
	char sub[PATH_MAX_LEN];
	size_t cnt = walk_named(c, n, path);

	for (size_t i = 0; i < cnt; i++) {
		struct config_version *v = config_version_find(s, n->keys[i]->text);
		struct config_fault scratch = {0};
		struct config_fault *f = v ? &v->fault : &scratch;

		path_key(sub, path, n->keys[i]->text);
		if (!v && s->versions) {
			char names[256];

			cerr(c, n->keys[i]->line, sub,
			     "version \"%s\" is not defined in service \"%s\" (defined: %s)",
			     n->keys[i]->text, s->name,
			     config_version_names(s, names, sizeof(names)));
		}
		f->line = n->items[i]->line;
		walk_map(c, n->items[i], sub, fault_fields, NFIELDS(fault_fields), f, NULL);
	}
}

static void check_version_ref(struct cctx *c, const struct config_service *s, const char *name,
                              int line, const char *path)
{
	char names[256];

	if (name && s->versions && !config_version_find(s, name))
		cerr(c, line, path, "version \"%s\" is not defined in service \"%s\" (defined: %s)",
		     name, s->name, config_version_names(s, names, sizeof(names)));
}

static void parse_service(struct cctx *c, const char *name, const struct cnode *n, const char *path,
                          struct config_service *s)
{
	char sub[PATH_MAX_LEN];
	long fi;

	s->name = cfg_arena_strdup(c->out, name);
	s->line = n->line;
	s->timeouts = (struct config_timeouts){2000, 10000, 30000, 60000};
	s->outlier = (struct config_outlier){5, 30000, 50000};
	s->mirror.percent = 100000;
	s->mirror.body_cap = 64u << 10;
	s->drain_ms = 30000;
	s->max_header_bytes = 32768;
	if (!walk_map(c, n, path, svc_fields, NFIELDS(svc_fields), s, NULL))
		return;
	path_key(sub, path, "stable");
	check_version_ref(c, s, s->stable, key_line(n, "stable"), sub);
	if (s->mirror.enabled) {
		long mi = map_find(n, "mirror");

		path_key(sub, path, "mirror.version");
		check_version_ref(c, s, s->mirror.version, key_line(n->items[mi], "version"), sub);
		if (!s->mirror.methods.n) {
			static const char *const safe[] = {"GET", "HEAD", "OPTIONS"};

			s->mirror.methods.v = (const char **)safe;
			s->mirror.methods.n = 3;
		}
	}
	for (size_t i = 0; i < s->noverrides; i++) {
		long oi = map_find(n, "overrides");
		const struct cnode *on = n->items[oi]->items[i];
		char op[PATH_MAX_LEN];

		path_key(op, path, "overrides");
		path_idx(sub, op, i);
		path_key(op, sub, "version");
		if (s->overrides[i].action == CONFIG_OVERRIDE_VERSION)
			check_version_ref(c, s, s->overrides[i].version, key_line(on, "version"),
			                  op);
	}
	fi = map_find(n, "faults");
	if (fi >= 0) {
		path_key(sub, path, "faults");
		parse_faults(c, n->items[fi], sub, s);
	}
}

static void parse_services(struct cctx *c, const struct cnode *n, const char *path)
{
	struct config *cfg = c->cfg;
	char sub[PATH_MAX_LEN];
	size_t cnt = walk_named(c, n, path);

	cfg->services = cfg_arena_alloc(c->out, (cnt ? cnt : 1) * sizeof(*cfg->services));
	if (!cfg->services)
		return;
	cfg->nservices = cnt;
	for (size_t i = 0; i < cnt; i++) {
		path_key(sub, path, n->keys[i]->text);
		parse_service(c, n->keys[i]->text, n->items[i], sub, &cfg->services[i]);
	}
}

/* --- segments, flags, rollouts (lists keyed by name) -------------------------------------- */

static void parse_segments(struct cctx *c, const struct cnode *n, const char *path)
{
	struct config *cfg = c->cfg;
	char sub[PATH_MAX_LEN];
	size_t cnt = walk_named(c, n, path);

	cfg->segments = cfg_arena_alloc(c->out, (cnt ? cnt : 1) * sizeof(*cfg->segments));
	if (!cfg->segments)
		return;
	cfg->nsegments = cnt;
	for (size_t i = 0; i < cnt; i++) {
		path_key(sub, path, n->keys[i]->text);
		parse_segment(c, n->keys[i]->text, n->items[i], sub, &cfg->segments[i]);
	}
}

static void parse_flags(struct cctx *c, const struct cnode *n, const char *path)
{
	struct config *cfg = c->cfg;
	char sub[PATH_MAX_LEN];
	size_t cnt = walk_named(c, n, path);

	cfg->flags = cfg_arena_alloc(c->out, (cnt ? cnt : 1) * sizeof(*cfg->flags));
	if (!cfg->flags)
		return;
	cfg->nflags = cnt;
	for (size_t i = 0; i < cnt; i++) {
		path_key(sub, path, n->keys[i]->text);
		parse_flag(c, n->keys[i]->text, n->items[i], sub, &cfg->flags[i]);
	}
}

static void parse_rollouts(struct cctx *c, const struct cnode *n, const char *path)
{
	struct config *cfg = c->cfg;
	char sub[PATH_MAX_LEN];
	size_t cnt = walk_named(c, n, path);

	cfg->rollouts = cfg_arena_alloc(c->out, (cnt ? cnt : 1) * sizeof(*cfg->rollouts));
	if (!cfg->rollouts)
		return;
	cfg->nrollouts = cnt;
	for (size_t i = 0; i < cnt; i++) {
		path_key(sub, path, n->keys[i]->text);
		parse_rollout(c, n->keys[i]->text, n->items[i], sub, &cfg->rollouts[i]);
	}
}

/* --- the top level ---------------------------------------------------------------------------- */

static const struct field top_fields[] = {
    FLD_FN("admin", field_later),     FLD_FN("store", field_later),
    FLD_FN("workers", field_later),   FLD_FN("metrics", field_later),
    FLD_FN("listeners", field_later), FLD_FN("services", field_later),
    FLD_FN("segments", field_later),  FLD_FN("flags", field_later),
    FLD_FN("rollouts", field_later),  FLD_FN("events", field_later),
    FLD_FN("fleet", field_later),     FLD_FN("io", field_later),
};

static const struct field fleet_fields[] = {
    FLD("lease", FK_DURATION, struct config, fleet.lease_ms),
    FLD("node", FK_STR, struct config, fleet.node),
};

/* `fleet:` - the leader lease and this node's id (docs/fleet.md). */
static void parse_fleet(struct cctx *c, const struct cnode *n, const char *path)
{
	struct config *cfg = c->cfg;

	if (!walk_map(c, n, path, fleet_fields, NFIELDS(fleet_fields), cfg, NULL))
		return;
	if (cfg->fleet.lease_ms < 300 || cfg->fleet.lease_ms > 60000)
		cerr(c, n->line, "fleet.lease", "must be between 300ms and 60s");
	if (cfg->fleet.node && (!cfg->fleet.node[0] || strlen(cfg->fleet.node) > 200))
		cerr(c, n->line, "fleet.node", "must be 1 to 200 bytes");
}

static const struct field events_fields[] = {
    FLD("full_resolution", FK_DURATION, struct config, events.full_resolution_ms),
    FLD("summary_interval", FK_DURATION, struct config, events.summary_interval_ms),
};

/* `events:` - how long interval events and verdicts keep full resolution. */
static void parse_events(struct cctx *c, const struct cnode *n, const char *path)
{
	struct config *cfg = c->cfg;

	if (!walk_map(c, n, path, events_fields, NFIELDS(events_fields), cfg, NULL))
		return;
	if (cfg->events.summary_interval_ms < 1000)
		cerr(c, n->line, "events.summary_interval", "must be at least 1s");
	else if (cfg->events.full_resolution_ms < cfg->events.summary_interval_ms)
		cerr(c, n->line, "events.full_resolution", "must be at least summary_interval");
}

static void parse_root(struct cctx *c, const struct cnode *root)
{
	struct config *cfg = c->cfg;
	long i;

	cfg->admin.listen =
	    (struct config_addr){.host = "127.0.0.1", .port = 9901, .family = AF_INET};
	cfg->store =
	    (struct config_store){CONFIG_STORE_SQLITE, "sqlite:canaryd.db", "canaryd.db", 0};
	if (!walk_map(c, root, "", top_fields, NFIELDS(top_fields), cfg, NULL))
		return;
	if ((i = map_find(root, "admin")) >= 0) {
		cfg->admin.line = root->items[i]->line;
		walk_map(c, root->items[i], "admin", admin_fields, NFIELDS(admin_fields),
		         &cfg->admin, NULL);
	}
	if ((i = map_find(root, "store")) >= 0)
		parse_store(c, root->items[i], "store", &cfg->store);
	if ((i = map_find(root, "workers")) >= 0)
		parse_workers(c, root->items[i], "workers", &cfg->workers);
	cfg->io = CONFIG_IO_AUTO; /* the default, measured: docs/proxy.md "I/O path" */
	if ((i = map_find(root, "io")) >= 0)
		parse_io(c, root->items[i], "io", &cfg->io);
	if ((i = map_find(root, "metrics")) >= 0)
		walk_map(c, root->items[i], "metrics", metrics_fields, NFIELDS(metrics_fields), cfg,
		         NULL);
	cfg->events.full_resolution_ms = 7ULL * 24 * 3600 * 1000;
	cfg->events.summary_interval_ms = 3600ULL * 1000;
	if ((i = map_find(root, "events")) >= 0)
		parse_events(c, root->items[i], "events");
	cfg->fleet.lease_ms = 3000;
	if ((i = map_find(root, "fleet")) >= 0)
		parse_fleet(c, root->items[i], "fleet");
	if ((i = map_find(root, "segments")) >= 0)
		parse_segments(c, root->items[i], "segments");
	if ((i = map_find(root, "services")) >= 0)
		parse_services(c, root->items[i], "services");
	if ((i = map_find(root, "listeners")) >= 0)
		parse_listeners(c, root->items[i], "listeners");
	if ((i = map_find(root, "flags")) >= 0)
		parse_flags(c, root->items[i], "flags");
	if ((i = map_find(root, "rollouts")) >= 0)
		parse_rollouts(c, root->items[i], "rollouts");
}

/* Sections are parsed in dependency order; users read errors in file order. */
static void sort_by_line(struct config_errors *errs, size_t from)
{
	for (size_t i = from + 1; i < errs->n; i++) {
		struct config_error e = errs->v[i];
		size_t j = i;

		for (; j > from && errs->v[j - 1].line > e.line; j--)
			errs->v[j] = errs->v[j - 1];
		errs->v[j] = e;
	}
}

static struct config *load(const char *name, const char *base_dir, const char *yaml, size_t len,
                           struct config_errors *errs)
{
	struct cfg_arena tmp = {0};
	struct cctx c = {.errs = errs,
	                 .base_dir = base_dir,
	                 .file = name,
	                 .tmp = &tmp,
	                 .expand_env = true,
	                 .nerr_start = config_errors_count(errs)};
	struct config *cfg = calloc(1, sizeof(*cfg));
	struct cnode *root;
	char *redacted;
	size_t rlen;

	if (!cfg)
		goto out_nomem;
	cfg->own = calloc(1, sizeof(struct cfg_arena));
	cfg->source = malloc(len + 1);
	if (!cfg->own || !cfg->source)
		goto out_nomem;
	memcpy(cfg->source, yaml, len);
	cfg->source[len] = '\0';
	cfg->source_len = len;
	c.out = cfg->own;
	c.cfg = cfg;
	cfg->file = cfg_arena_strdup(c.out, name);
	if (!cfg->file)
		goto out_nomem;
	root = cnode_from_yaml(&c, cfg->source, len);
	if (root)
		parse_root(&c, root);
	sort_by_line(errs, c.nerr_start);
	if (cctx_failed(&c)) {
		cfg_arena_release(&tmp);
		config_free(cfg);
		return NULL;
	}
	/* the snapshot kept for evidence bundles never holds a secret */
	redacted = cnode_redacted_source(&c, cfg->source, len, &rlen);
	cfg_arena_release(&tmp);
	if (!redacted)
		goto out_nomem;
	free(cfg->source);
	cfg->source = redacted;
	cfg->source_len = rlen;
	return cfg;

out_nomem:
	config_errors_add(errs, name, 0, "", "out of memory");
	cfg_arena_release(&tmp);
	config_free(cfg);
	return NULL;
}

struct config *config_load_string(const char *name, const char *yaml, size_t len,
                                  struct config_errors *errs)
{
	return load(name, NULL, yaml, len, errs);
}

struct config *config_load_file(const char *path, struct config_errors *errs)
{
	char dir[4096];
	const char *slash = strrchr(path, '/');
	struct config *cfg = NULL;
	char *data = NULL;
	size_t len = 0, cap = 0;
	FILE *fp = fopen(path, "r");

	if (!fp) {
		config_errors_add(errs, path, 0, "", "cannot open: %s", strerror(errno));
		return NULL;
	}
	for (;;) {
		size_t got;

		if (len == cap) {
			char *nd;

			cap = cap ? cap * 2 : 16384;
			if (cap > CONFIG_FILE_MAX + 1)
				cap = CONFIG_FILE_MAX + 1;
			nd = realloc(data, cap);
			if (!nd || len == cap) {
				free(nd ? nd : data);
				data = NULL;
				config_errors_add(errs, path, 0, "",
				                  nd ? "larger than 16 MiB" : "out of memory");
				goto out_close;
			}
			data = nd;
		}
		got = fread(data + len, 1, cap - len, fp);
		len += got;
		if (got == 0)
			break;
	}
	if (ferror(fp)) {
		config_errors_add(errs, path, 0, "", "cannot read: %s", strerror(errno));
		goto out_close;
	}
	if (slash)
		snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path) + (slash == path), path);
	cfg = load(path, slash ? dir : NULL, data, len, errs);
out_close:
	fclose(fp);
	free(data);
	return cfg;
}

void config_free(struct config *cfg)
{
	if (!cfg)
		return;
	if (cfg->own) {
		cfg_arena_release(cfg->own);
		free(cfg->own);
	}
	free(cfg->source);
	free(cfg);
}

static const char *plural(size_t n, const char *one, const char *many)
{
	return n == 1 ? one : many;
}

int config_summary(const struct config *cfg, char *buf, size_t n)
{
	return snprintf(buf, n, "%s: ok: %zu %s, %zu %s, %zu %s, %zu %s, %zu %s", cfg->file,
	                cfg->nlisteners, plural(cfg->nlisteners, "listener", "listeners"),
	                cfg->nservices, plural(cfg->nservices, "service", "services"),
	                cfg->nsegments, plural(cfg->nsegments, "segment", "segments"), cfg->nflags,
	                plural(cfg->nflags, "flag", "flags"), cfg->nrollouts,
	                plural(cfg->nrollouts, "rollout", "rollouts"));
}
