/*
 * config_tls.c - the `tls:` keys: on listeners and admin ({certs, min_version,
 * alpn}) and on versions ({verify, ca, sni}).  Only the shape is checked
 * here; reading the files and matching keys to certificates is
 * src/net/tls.c's (it needs OpenSSL, which the config module does not link),
 * reported with the lines kept in the model.  See docs/tls.md.
 */
#include <stdio.h>
#include <string.h>

#include "config/config_internal.h"

/* ALPN protocols canaryd can speak after the handshake. */
static const char *const alpn_known[] = {"http/1.1"};

/* A file path; a relative one starts at the config file's directory. */
static bool tls_path(struct cctx *c, const struct cnode *n, const char *path, const char **out)
{
	const char *t = get_text(c, n, path);
	char full[4096];

	if (!t)
		return false;
	if (!*t) {
		cerr(c, n->line, path, "must not be empty");
		return false;
	}
	if (t[0] != '/' && c->base_dir) {
		if ((size_t)snprintf(full, sizeof(full), "%s/%s", c->base_dir, t) >= sizeof(full)) {
			cerr(c, n->line, path, "path too long");
			return false;
		}
		t = full;
	}
	*out = cfg_arena_strdup(c->out, t);
	return *out != NULL;
}

static bool cert_cert(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_tls_cert *k = obj;

	k->cert_line = n->line;
	return tls_path(c, n, path, &k->cert);
}

static bool cert_key(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_tls_cert *k = obj;

	k->key_line = n->line;
	return tls_path(c, n, path, &k->key);
}

static const struct field cert_fields[] = {
    FLD_FN_REQ("cert", cert_cert),
    FLD_FN_REQ("key", cert_key),
};

static bool tls_certs(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_tls *t = obj;
	char sub[PATH_MAX_LEN];

	if (!want_seq(c, n, path))
		return false;
	if (n->n == 0) {
		cerr(c, n->line, path, "at least one {cert, key} is required");
		return false;
	}
	t->certs = cfg_arena_alloc(c->out, n->n * sizeof(*t->certs));
	if (!t->certs)
		return false;
	t->ncerts = n->n;
	for (size_t i = 0; i < n->n; i++) {
		path_idx(sub, path, i);
		t->certs[i].line = n->items[i]->line;
		walk_map(c, n->items[i], sub, cert_fields, NFIELDS(cert_fields), &t->certs[i],
		         NULL);
	}
	return true;
}

/* 1.2 or 1.3; 1.0 and 1.1 are refused by name (RFC 8996). */
static bool tls_min_version(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_tls *t = obj;
	const char *v =
	    n->type == CN_SCALAR && n->json && !n->quoted ? n->text : get_text(c, n, path);

	if (!v)
		return false;
	if (strcmp(v, "1.2") == 0) {
		t->min_version = 12;
	} else if (strcmp(v, "1.3") == 0) {
		t->min_version = 13;
	} else if (strcmp(v, "1.0") == 0 || strcmp(v, "1.1") == 0 || strcmp(v, "1") == 0) {
		cerr(c, n->line, path, "TLS %s is not supported: use 1.2 or 1.3", v);
		return false;
	} else {
		cerr(c, n->line, path, "expected 1.2 or 1.3, got \"%.40s\"", v);
		return false;
	}
	return true;
}

static bool tls_alpn(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_tls *t = obj;
	char sub[PATH_MAX_LEN];
	bool ok = true;

	if (!get_strlist(c, n, path, false, &t->alpn))
		return false;
	if (t->alpn.n == 0) {
		cerr(c, n->line, path, "at least one protocol is required (http/1.1)");
		return false;
	}
	for (size_t i = 0; i < t->alpn.n; i++) {
		size_t k;

		for (k = 0; k < sizeof(alpn_known) / sizeof(alpn_known[0]); k++)
			if (strcmp(t->alpn.v[i], alpn_known[k]) == 0)
				break;
		if (k < sizeof(alpn_known) / sizeof(alpn_known[0]))
			continue;
		path_idx(sub, path, i);
		cerr(c, n->type == CN_SEQ ? n->items[i]->line : n->line,
		     n->type == CN_SEQ ? sub : path,
		     "unknown ALPN protocol \"%.60s\" (supported: %s)", t->alpn.v[i],
		     alpn_known[0]);
		ok = false;
	}
	return ok;
}

static const struct field tls_fields[] = {
    FLD_FN_REQ("certs", tls_certs),
    FLD_FN("min_version", tls_min_version),
    FLD_FN("alpn", tls_alpn),
};

bool parse_tls(struct cctx *c, const struct cnode *n, const char *path, struct config_tls *t)
{
	static const char *const dflt_alpn[] = {"http/1.1"};

	t->enabled = true;
	t->line = n->line;
	t->min_version = 12;
	t->alpn.v = (const char **)dflt_alpn;
	t->alpn.n = 1;
	return walk_map(c, n, path, tls_fields, NFIELDS(tls_fields), t, NULL);
}

/* A server name for SNI: a DNS name, no port, no wildcard. */
static bool up_sni(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_upstream_tls *t = obj;
	const char *v = get_text(c, n, path);
	size_t len;

	if (!v)
		return false;
	len = strlen(v);
	if (len == 0 || len > 253 ||
	    strspn(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	              "0123456789-.") != len ||
	    v[0] == '.' || v[0] == '-') {
		cerr(c, n->line, path, "invalid server name \"%.100s\" (a DNS name)", v);
		return false;
	}
	t->sni = cfg_arena_strdup(c->out, v);
	return t->sni != NULL;
}

static bool up_ca(struct cctx *c, const struct cnode *n, const char *path, void *obj)
{
	struct config_upstream_tls *t = obj;

	t->ca_line = n->line;
	return tls_path(c, n, path, &t->ca);
}

static const struct field up_fields[] = {
    FLD("verify", FK_BOOL, struct config_upstream_tls, verify),
    FLD_FN("ca", up_ca),
    FLD_FN("sni", up_sni),
};

bool parse_upstream_tls(struct cctx *c, const struct cnode *n, const char *path,
                        struct config_upstream_tls *t)
{
	t->enabled = true;
	t->verify = true;
	t->line = n->line;
	if (n->type == CN_NULL) /* `tls:` alone: the defaults */
		return true;
	return walk_map(c, n, path, up_fields, NFIELDS(up_fields), t, NULL);
}
