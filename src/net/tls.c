/*
 * tls.c - OpenSSL 3 contexts and the TLS transport.  See tls.h and
 * docs/tls.md.
 *
 * (core/err.h is not included: its ERR_STATE collides with OpenSSL's.)
 */
#include "net/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define TICKET_ROTATE_MS (3600ull * 1000) /* a new ticket key every hour */
#define MAX_NAMES        256              /* SNI names per server, all certificates */
#define WRITE_COALESCE   (16 * 1024)      /* one TLS record's worth of small iovecs */
#define HELD_CAP         512              /* a TLS 1.3 ticket (~300 bytes) fits */

/* Modern TLS 1.2 suites (forward secret, AEAD); TLS 1.3 keeps OpenSSL's. */
static const char cipher_list[] = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                                  "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                                  "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

/* --- session-ticket keys (process-wide) -------------------------------------- */

struct ticket_key {
	unsigned char name[16];
	unsigned char aes[32];
	unsigned char hmac[32];
	uint64_t born_ms;
};

/*
 * A ring of three keys: slot gen%3 encrypts, slot (gen-1)%3 still decrypts,
 * and a rotation writes slot (gen+1)%3 -- which no reader looks at unless it
 * stalled for a whole rotation period -- then advances gen.
 */
static struct {
	pthread_once_t once;
	int ok;
	struct ticket_key slot[3];
	atomic_uint_fast64_t gen;
	atomic_int rotating;
} keys = {.once = PTHREAD_ONCE_INIT};

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int key_fill(struct ticket_key *k)
{
	if (RAND_bytes(k->name, sizeof(k->name)) != 1 || RAND_bytes(k->aes, sizeof(k->aes)) != 1 ||
	    RAND_bytes(k->hmac, sizeof(k->hmac)) != 1)
		return -1;
	k->born_ms = now_ms();
	return 0;
}

static void keys_init(void)
{
	keys.ok = key_fill(&keys.slot[0]) == 0;
	atomic_store(&keys.gen, 0);
}

/* On a handshake that issues a ticket: replaces an expired current key. */
static void keys_maybe_rotate(uint64_t gen)
{
	int expected = 0;
	struct ticket_key *next;

	if (now_ms() - keys.slot[gen % 3].born_ms < TICKET_ROTATE_MS)
		return;
	if (!atomic_compare_exchange_strong(&keys.rotating, &expected, 1))
		return; /* another thread rotates */
	if (atomic_load(&keys.gen) == gen) {
		next = &keys.slot[(gen + 1) % 3];
		if (key_fill(next) == 0)
			atomic_store_explicit(&keys.gen, gen + 1, memory_order_release);
	}
	atomic_store(&keys.rotating, 0);
}

static int key_mac_init(EVP_MAC_CTX *hctx, const struct ticket_key *k)
{
	OSSL_PARAM params[3];

	params[0] =
	    OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)k->hmac, sizeof(k->hmac));
	params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0);
	params[2] = OSSL_PARAM_construct_end();
	return EVP_MAC_CTX_set_params(hctx, params) == 1 ? 0 : -1;
}

/* SSL_CTX_set_tlsext_ticket_key_evp_cb: RFC 5077 tickets, AES-256-CBC + HMAC-SHA256. */
static int ticket_cb(SSL *ssl, unsigned char key_name[16], unsigned char iv[EVP_MAX_IV_LENGTH],
                     EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
	uint64_t gen;
	const struct ticket_key *k;

	if (!keys.ok)
		return enc ? -1 : 0;
	gen = atomic_load_explicit(&keys.gen, memory_order_acquire);
	if (enc) {
		keys_maybe_rotate(gen);
		gen = atomic_load_explicit(&keys.gen, memory_order_acquire);
		k = &keys.slot[gen % 3];
		if (RAND_bytes(iv, 16) != 1)
			return -1;
		memcpy(key_name, k->name, sizeof(k->name));
		if (EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes, iv) != 1 ||
		    key_mac_init(hctx, k) != 0)
			return -1;
		return 1;
	}
	for (unsigned back = 0; back < 2 && back <= gen; back++) {
		k = &keys.slot[(gen - back) % 3];
		if (memcmp(key_name, k->name, sizeof(k->name)) != 0)
			continue;
		if (key_mac_init(hctx, k) != 0 ||
		    EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, k->aes, iv) != 1)
			return -1;
		/*
		 * 2: decrypts, and a new ticket is issued.  Under the previous key
		 * (re-encrypt under the current one), and always in TLS 1.3: its
		 * clients use a ticket once (RFC 8446 C.4), so a resumption that
		 * issued none makes the client's next connection a full handshake.
		 */
		return back || (ssl && SSL_version(ssl) >= TLS1_3_VERSION) ? 2 : 1;
	}
	return 0; /* unknown or expired key: a full handshake */
}

/* --- errors ------------------------------------------------------------------ */

/* The oldest (most specific) OpenSSL error as text (the queue is emptied), or fallback. */
static const char *ossl_reason(char *buf, size_t n, const char *fallback)
{
	unsigned long last = ERR_get_error();

	ERR_clear_error();
	if (!last) {
		snprintf(buf, n, "%s", fallback);
		return buf;
	}
	ERR_error_string_n(last, buf, n);
	/* "error:0A00018F:SSL routines::ee key too small" -> the part after "::" */
	{
		const char *p = strstr(buf, "::");

		if (p)
			memmove(buf, p + 2, strlen(p + 2) + 1);
	}
	return buf;
}

/* A readable regular file, with errno's text when not. */
static int file_readable(const char *path, char *why, size_t n)
{
	FILE *fp = fopen(path, "r");

	if (!fp) {
		snprintf(why, n, "%s", strerror(errno));
		return 0;
	}
	fclose(fp);
	return 1;
}

/* Never prompt for a passphrase (the default would read the terminal). */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf, (void)size, (void)rwflag, (void)u;
	return 0;
}

/* --- servers ------------------------------------------------------------------- */

struct sni_name {
	char *name;   /* lower-case; for a wildcard the part after "*." */
	int wildcard; /* "*.example.com" */
	SSL_CTX *ctx; /* not owned: one of the server's ctxs */
};

struct tls_server {
	atomic_uint refs;
	SSL_CTX **ctxs; /* one per certificate; ctxs[0] the default */
	size_t nctx;
	struct sni_name *names;
	size_t nnames;
	unsigned char alpn[64]; /* wire format: length-prefixed protocols */
	unsigned alpn_len;
};

static void server_free(struct tls_server *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->nctx; i++)
		SSL_CTX_free(s->ctxs[i]);
	for (size_t i = 0; i < s->nnames; i++)
		free(s->names[i].name);
	free(s->ctxs);
	free(s->names);
	free(s);
}

struct tls_server *tls_server_ref(struct tls_server *s)
{
	if (s)
		atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
	return s;
}

void tls_server_unref(struct tls_server *s)
{
	if (s && atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) == 1)
		server_free(s);
}

static SSL_CTX *server_pick(const struct tls_server *s, const char *sni)
{
	const char *dot;

	if (!sni)
		return NULL;
	for (size_t i = 0; i < s->nnames; i++)
		if (!s->names[i].wildcard && strcasecmp(s->names[i].name, sni) == 0)
			return s->names[i].ctx;
	/* "*.a.test" covers exactly one label: "x.a.test", not "a.test" or "y.x.a.test" */
	dot = strchr(sni, '.');
	if (!dot || dot == sni)
		return NULL;
	for (size_t i = 0; i < s->nnames; i++)
		if (s->names[i].wildcard && strcasecmp(s->names[i].name, dot + 1) == 0)
			return s->names[i].ctx;
	return NULL;
}

/*
 * The host_name of a ClientHello's server_name extension (RFC 6066 3) into
 * out[cap]; 0, or -1 when absent or malformed (the default certificate).
 */
static int hello_sni(SSL *ssl, char *out, size_t cap)
{
	const unsigned char *p;
	size_t len, list;

	if (SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &p, &len) != 1 || len < 2)
		return -1;
	list = (size_t)p[0] << 8 | p[1];
	if (list + 2 != len)
		return -1;
	for (p += 2; list >= 3;) {
		size_t n = (size_t)p[1] << 8 | p[2];

		if (n + 3 > list)
			return -1;
		if (p[0] == TLSEXT_NAMETYPE_host_name) {
			if (n == 0 || n >= cap || memchr(p + 3, '\0', n))
				return -1;
			memcpy(out, p + 3, n);
			out[n] = '\0';
			return 0;
		}
		p += 3 + n;
		list -= 3 + n;
	}
	return -1;
}

/*
 * SNI, before anything else of the ClientHello is looked at: switch to the
 * certificate naming the host (unknown or absent keeps the default).  Doing
 * it this early also switches the session id context, which is per
 * certificate, so a session or ticket made under one certificate never
 * resumes under another.
 */
static int client_hello_cb(SSL *ssl, int *alert, void *arg)
{
	const struct tls_server *s = arg;
	char sni[256];
	SSL_CTX *ctx = hello_sni(ssl, sni, sizeof(sni)) == 0 ? server_pick(s, sni) : NULL;

	(void)alert;
	if (ctx && ctx != SSL_get_SSL_CTX(ssl))
		SSL_set_SSL_CTX(ssl, ctx);
	return SSL_CLIENT_HELLO_SUCCESS;
}

/* ALPN: our first protocol the client offers; none in common is a fatal alert (RFC 7301). */
static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned inlen, void *arg)
{
	const struct tls_server *s = arg;
	unsigned char *o = NULL;

	(void)ssl;
	if (SSL_select_next_proto(&o, outlen, s->alpn, s->alpn_len, in, inlen) !=
	    OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	*out = o;
	return SSL_TLSEXT_ERR_OK;
}

static int add_name(struct tls_server *s, const char *p, size_t len, SSL_CTX *ctx)
{
	struct sni_name *n;
	int wild = len > 2 && p[0] == '*' && p[1] == '.';

	if (wild)
		p += 2, len -= 2;
	if (len == 0 || len > 253 || memchr(p, '\0', len) || s->nnames >= MAX_NAMES)
		return 0; /* not a usable name: the certificate still serves as default */
	for (size_t i = 0; i < s->nnames; i++)
		if (s->names[i].wildcard == wild && strlen(s->names[i].name) == len &&
		    strncasecmp(s->names[i].name, p, len) == 0)
			return 0; /* an earlier certificate names it: the first wins */
	n = &s->names[s->nnames];
	n->name = strndup(p, len);
	if (!n->name)
		return -ENOMEM;
	n->wildcard = wild;
	n->ctx = ctx;
	s->nnames++;
	return 0;
}

/* The names a certificate serves: its DNS subjectAltNames, else its subject CN. */
static int cert_names(struct tls_server *s, SSL_CTX *ctx)
{
	X509 *x = SSL_CTX_get0_certificate(ctx);
	GENERAL_NAMES *sans;
	int found = 0, rc = 0;

	if (!x)
		return 0;
	sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans) && rc == 0; i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);

		if (g->type != GEN_DNS)
			continue;
		found = 1;
		rc = add_name(s, (const char *)ASN1_STRING_get0_data(g->d.dNSName),
		              (size_t)ASN1_STRING_length(g->d.dNSName), ctx);
	}
	GENERAL_NAMES_free(sans);
	if (!found && rc == 0) {
		X509_NAME *subj = X509_get_subject_name(x);
		int idx = subj ? X509_NAME_get_index_by_NID(subj, NID_commonName, -1) : -1;

		if (idx >= 0) {
			ASN1_STRING *cn = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, idx));

			rc = add_name(s, (const char *)ASN1_STRING_get0_data(cn),
			              (size_t)ASN1_STRING_length(cn), ctx);
		}
	}
	return rc;
}

struct where {
	struct config_errors *errs;
	const char *file;
	const char *path; /* "listeners[0].tls" or "admin.tls" */
};

#define werr(w, line, sub, ...)                                                 \
	do {                                                                    \
		char p_[1024];                                                  \
		snprintf(p_, sizeof(p_), "%s%s", (w)->path, sub);               \
		config_errors_add((w)->errs, (w)->file, line, p_, __VA_ARGS__); \
	} while (0)

/* Everything of a server context but its certificate (the tests build theirs with it). */
static void server_ctx_options(SSL_CTX *ctx, struct tls_server *s, int min_version)
{
	SSL_CTX_set_min_proto_version(ctx, min_version);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
	                             SSL_OP_NO_COMPRESSION | SSL_OP_IGNORE_UNEXPECTED_EOF);
	/*
	 * The certificate file is the whole chain sent: no chain built from a
	 * store per full handshake (the context's store is empty anyway).
	 */
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
	                          SSL_MODE_RELEASE_BUFFERS | SSL_MODE_NO_AUTO_CHAIN);
	/* one read(2) per flight, not two per record (header, then body) */
	SSL_CTX_set_read_ahead(ctx, 1);
	SSL_CTX_set_cipher_list(ctx, cipher_list);
	/* stateless resumption only: no server-side cache (memory, a lock per handshake) */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_num_tickets(ctx, 1);
	SSL_CTX_set_timeout(ctx, (long)(2 * TICKET_ROTATE_MS / 1000));
	SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_cb);
	SSL_CTX_set_client_hello_cb(ctx, client_hello_cb, s);
	SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, s);
	SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
}

/* One server context with one certificate; NULL after reporting. */
static SSL_CTX *server_ctx(struct tls_server *s, const struct config_tls *cfg, size_t i,
                           const struct where *w)
{
	const struct config_tls_cert *c = &cfg->certs[i];
	char sub[64], why[256];
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	if (!ctx) {
		werr(w, cfg->line, "", "cannot create a TLS context: %s",
		     ossl_reason(why, sizeof(why), "out of memory"));
		return NULL;
	}
	server_ctx_options(ctx, s, cfg->min_version == 13 ? TLS1_3_VERSION : TLS1_2_VERSION);

	snprintf(sub, sizeof(sub), ".certs[%zu].cert", i);
	if (!file_readable(c->cert, why, sizeof(why))) {
		werr(w, c->cert_line, sub, "cannot read \"%s\": %s", c->cert, why);
		goto out_free;
	}
	ERR_clear_error();
	if (SSL_CTX_use_certificate_chain_file(ctx, c->cert) != 1) {
		werr(w, c->cert_line, sub, "\"%s\" is not a PEM certificate: %s", c->cert,
		     ossl_reason(why, sizeof(why), "no certificate found"));
		goto out_free;
	}
	snprintf(sub, sizeof(sub), ".certs[%zu].key", i);
	if (!file_readable(c->key, why, sizeof(why))) {
		werr(w, c->key_line, sub, "cannot read \"%s\": %s", c->key, why);
		goto out_free;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, c->key, SSL_FILETYPE_PEM) != 1) {
		unsigned long e = ERR_peek_last_error();

		if (ERR_GET_REASON(e) == X509_R_KEY_VALUES_MISMATCH)
			werr(w, c->key_line, sub,
			     "the key in \"%s\" does not match the certificate \"%s\"", c->key,
			     c->cert);
		else
			werr(w, c->key_line, sub,
			     "\"%s\" is not a PEM private key (encrypted keys are not "
			     "supported): %s",
			     c->key, ossl_reason(why, sizeof(why), "no key found"));
		ERR_clear_error();
		goto out_free;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		werr(w, c->key_line, sub, "the key in \"%s\" does not match the certificate \"%s\"",
		     c->key, c->cert);
		ERR_clear_error();
		goto out_free;
	}
	/* sessions resume under the same certificate only (and survive a reload that kept it) */
	if (X509_digest(SSL_CTX_get0_certificate(ctx), EVP_sha256(), md, &mdlen) != 1 ||
	    SSL_CTX_set_session_id_context(ctx, md, mdlen) != 1) {
		werr(w, c->cert_line, sub, "cannot fingerprint \"%s\": %s", c->cert,
		     ossl_reason(why, sizeof(why), "out of memory"));
		goto out_free;
	}
	return ctx;

out_free:
	SSL_CTX_free(ctx);
	return NULL;
}

static struct tls_server *server_new(const struct config_tls *cfg, const struct where *w)
{
	struct tls_server *s = calloc(1, sizeof(*s));
	size_t errs0 = config_errors_count(w->errs);

	if (!s)
		goto out_nomem;
	atomic_init(&s->refs, 1);
	s->ctxs = calloc(cfg->ncerts ? cfg->ncerts : 1, sizeof(*s->ctxs));
	s->names = calloc(MAX_NAMES, sizeof(*s->names));
	if (!s->ctxs || !s->names)
		goto out_nomem;
	for (size_t i = 0; i < cfg->alpn.n; i++) {
		size_t l = strlen(cfg->alpn.v[i]);

		if (l == 0 || l > 255 || s->alpn_len + 1 + l > sizeof(s->alpn))
			continue; /* the config allows known protocols only */
		s->alpn[s->alpn_len++] = (unsigned char)l;
		memcpy(s->alpn + s->alpn_len, cfg->alpn.v[i], l);
		s->alpn_len += (unsigned)l;
	}
	for (size_t i = 0; i < cfg->ncerts; i++) {
		SSL_CTX *ctx = server_ctx(s, cfg, i, w);

		if (!ctx)
			continue;
		s->ctxs[s->nctx++] = ctx;
		if (cert_names(s, ctx) != 0)
			goto out_nomem;
	}
	if (config_errors_count(w->errs) != errs0 || s->nctx == 0)
		goto out_free;
	return s;

out_nomem:
	config_errors_add(w->errs, w->file, cfg->line, w->path, "out of memory");
out_free:
	server_free(s);
	return NULL;
}

/* --- clients ----------------------------------------------------------------------- */

static atomic_uint_fast64_t client_ids;

struct tls_client {
	uint64_t id;
	SSL_CTX *ctx;
	char *sni; /* NULL: the endpoint host when a name */
	int verify;
};

static void client_free(struct tls_client *c)
{
	if (!c)
		return;
	SSL_CTX_free(c->ctx);
	free(c->sni);
	free(c);
}

/*
 * The system's trust store, read now (control thread): with OpenSSL's
 * hashed directory lookup a verification could open files on a worker.
 * Read once per set and shared by its clients (a bundle is ~150 certificates).
 */
static X509_STORE *system_store(X509_STORE **cache)
{
	const char *file = getenv(X509_get_default_cert_file_env());
	X509_STORE *st = *cache;

	if (st)
		return st;
	st = X509_STORE_new();
	if (!st)
		return NULL;
	if (!file || !*file)
		file = X509_get_default_cert_file();
	if (X509_STORE_load_file(st, file) != 1) {
		ERR_clear_error();
		if (X509_STORE_set_default_paths(st) != 1) {
			X509_STORE_free(st);
			return NULL;
		}
	}
	*cache = st;
	return st;
}

static struct tls_client *client_new(const struct config_upstream_tls *cfg, const struct where *w,
                                     X509_STORE **sys)
{
	static const unsigned char alpn[] = "\x08http/1.1";
	struct tls_client *c = calloc(1, sizeof(*c));
	char why[256];

	if (!c)
		goto out_nomem;
	c->id = atomic_fetch_add(&client_ids, 1) + 1;
	c->verify = cfg->verify;
	if (cfg->sni && !(c->sni = strdup(cfg->sni)))
		goto out_nomem;
	c->ctx = SSL_CTX_new(TLS_client_method());
	if (!c->ctx)
		goto out_nomem;
	SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(c->ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
	                                SSL_OP_IGNORE_UNEXPECTED_EOF);
	SSL_CTX_set_mode(c->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
	                             SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
	                             SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_read_ahead(c->ctx, 1);
	SSL_CTX_set_cipher_list(c->ctx, cipher_list);
	SSL_CTX_set_alpn_protos(c->ctx, alpn, sizeof(alpn) - 1);
	SSL_CTX_set_default_passwd_cb(c->ctx, no_passphrase);
	if (!cfg->verify) {
		SSL_CTX_set_verify(c->ctx, SSL_VERIFY_NONE, NULL);
		return c;
	}
	SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
	if (cfg->ca) {
		if (!file_readable(cfg->ca, why, sizeof(why))) {
			werr(w, cfg->ca_line, ".ca", "cannot read \"%s\": %s", cfg->ca, why);
			goto out_free;
		}
		ERR_clear_error();
		if (SSL_CTX_load_verify_locations(c->ctx, cfg->ca, NULL) != 1) {
			werr(w, cfg->ca_line, ".ca", "\"%s\" holds no PEM certificate: %s", cfg->ca,
			     ossl_reason(why, sizeof(why), "no certificate found"));
			goto out_free;
		}
	} else if (system_store(sys)) {
		SSL_CTX_set1_cert_store(c->ctx, *sys); /* a reference each */
	} else {
		werr(w, cfg->line, "", "cannot load the system's CA certificates: %s",
		     ossl_reason(why, sizeof(why), "not found"));
		goto out_free;
	}
	return c;

out_nomem:
	config_errors_add(w->errs, w->file, cfg->line, w->path, "out of memory");
out_free:
	ERR_clear_error();
	client_free(c);
	return NULL;
}

uint64_t tls_client_id(const struct tls_client *c)
{
	return c ? c->id : 0;
}

/* --- the set --------------------------------------------------------------------- */

struct tls_named_server {
	const char *name; /* the config's (the set never outlives it: config_ref) */
	struct tls_server *srv;
};

struct tls_named_client {
	const char *service, *version;
	struct tls_client *cli;
};

struct tls_set {
	X509_STORE *system; /* the system's CAs, shared by the clients without `ca` */
	struct tls_server *admin;
	struct tls_named_server *servers;
	size_t nservers;
	struct tls_named_client *clients;
	size_t nclients;
};

void tls_set_free(struct tls_set *set)
{
	if (!set)
		return;
	tls_server_unref(set->admin);
	for (size_t i = 0; i < set->nservers; i++)
		tls_server_unref(set->servers[i].srv);
	for (size_t i = 0; i < set->nclients; i++)
		client_free(set->clients[i].cli);
	X509_STORE_free(set->system);
	free(set->servers);
	free(set->clients);
	free(set);
}

struct tls_set *tls_set_new(const struct config *cfg, struct config_errors *errs)
{
	struct tls_set *set = calloc(1, sizeof(*set));
	size_t errs0 = config_errors_count(errs), nver = 0;
	char path[512];
	struct where w = {errs, cfg->file ? cfg->file : "", path};

	if (!set)
		goto out_nomem;
	pthread_once(&keys.once, keys_init);
	for (size_t i = 0; i < cfg->nservices; i++)
		nver += cfg->services[i].nversions;
	set->servers = calloc(cfg->nlisteners ? cfg->nlisteners : 1, sizeof(*set->servers));
	set->clients = calloc(nver ? nver : 1, sizeof(*set->clients));
	if (!set->servers || !set->clients)
		goto out_nomem;
	if (cfg->admin.tls.enabled) {
		snprintf(path, sizeof(path), "admin.tls");
		set->admin = server_new(&cfg->admin.tls, &w);
	}
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		const struct config_listener *l = &cfg->listeners[i];
		struct tls_server *s;

		if (!l->tls.enabled)
			continue;
		snprintf(path, sizeof(path), "listeners[%zu].tls", i);
		s = server_new(&l->tls, &w);
		if (s)
			set->servers[set->nservers++] = (struct tls_named_server){l->name, s};
	}
	for (size_t i = 0; i < cfg->nservices; i++) {
		const struct config_service *svc = &cfg->services[i];

		for (size_t j = 0; j < svc->nversions; j++) {
			const struct config_version *v = &svc->versions[j];
			struct tls_client *c;

			if (!v->tls.enabled)
				continue;
			snprintf(path, sizeof(path), "services.%s.versions.%s.tls", svc->name,
			         v->name);
			c = client_new(&v->tls, &w, &set->system);
			if (c)
				set->clients[set->nclients++] =
				    (struct tls_named_client){svc->name, v->name, c};
		}
	}
	if (config_errors_count(errs) != errs0)
		goto out_free;
	return set;

out_nomem:
	config_errors_add(errs, cfg->file ? cfg->file : "", 0, "", "out of memory");
out_free:
	tls_set_free(set);
	return NULL;
}

struct tls_server *tls_set_listener(const struct tls_set *set, const char *name)
{
	for (size_t i = 0; set && name && i < set->nservers; i++)
		if (strcmp(set->servers[i].name, name) == 0)
			return set->servers[i].srv;
	return NULL;
}

struct tls_server *tls_set_admin(const struct tls_set *set)
{
	return set ? set->admin : NULL;
}

struct tls_client *tls_set_upstream(const struct tls_set *set, const char *service,
                                    const char *version)
{
	for (size_t i = 0; set && service && version && i < set->nclients; i++)
		if (strcmp(set->clients[i].service, service) == 0 &&
		    strcmp(set->clients[i].version, version) == 0)
			return set->clients[i].cli;
	return NULL;
}

size_t tls_set_count(const struct tls_set *set)
{
	return set ? (set->admin ? 1 : 0) + set->nservers + set->nclients : 0;
}

/* --- the transport ------------------------------------------------------------------ */

struct tls_conn {
	SSL *ssl;
	struct tls_server *srv; /* server side: keeps the SNI table alive */
	uint64_t client_id;     /* client side: tls_client_id() of its context */
	int fd;
	int done;       /* handshake finished */
	int finished;   /* OpenSSL's handshake finished (done once nothing is held) */
	int failed;     /* fatal error: no close_notify */
	int eof;        /* read(2) returned 0 (BIO_CTRL_EOF) */
	int drained;    /* the last read(2) returned less than asked: the socket was empty */
	int cork;       /* writes go to held (during a server's SSL_do_handshake) */
	uint64_t reads; /* read(2) calls, for the tests */
	/*
	 * Bytes OpenSSL wrote that are not on the socket yet: a server's
	 * handshake output, sent when the call returns -- except TLS 1.3's
	 * session ticket, written by the handshake's last call, which waits for
	 * the first response and leaves with it in one writev (one segment, one
	 * syscall less per connection).  Nobody waits for a ticket.
	 */
	unsigned char *held; /* HELD_CAP bytes while anything is held, else NULL */
	size_t held_off, held_len;
};

/* --- the socket BIO ------------------------------------------------------------ */

/*
 * OpenSSL's socket BIO plus three things: it notes a short read(2) (so a
 * read can stop without the extra read(2) that would only say EAGAIN), it
 * holds a server's handshake output (above), and it counts reads.  With
 * read-ahead on, OpenSSL asks for a whole buffer, so a short read means the
 * socket was drained at that moment: an edge-triggered owner gets an edge
 * for anything that comes after.
 */
static BIO_METHOD *sock_method;
static pthread_once_t sock_method_once = PTHREAD_ONCE_INIT;

/* writev of held then p[0..len); the count of p's bytes taken, or -1 + errno. */
static int held_writev(struct tls_conn *c, const void *p, size_t len)
{
	struct iovec iov[2];
	size_t hl = c->held_len - c->held_off;
	ssize_t n;
	int k = 0;

	if (hl)
		iov[k++] = (struct iovec){c->held + c->held_off, hl};
	if (len)
		iov[k++] = (struct iovec){(void *)p, len};
	do
		n = writev(c->fd, iov, k);
	while (n == -1 && errno == EINTR);
	if (n == -1)
		return -1;
	if ((size_t)n < hl) {
		c->held_off += (size_t)n;
		errno = EAGAIN; /* the socket is full: p is offered again */
		return -1;
	}
	c->held_off = c->held_len = 0;
	free(c->held); /* idle connections hold nothing */
	c->held = NULL;
	if ((size_t)n == hl && len) {
		errno = EAGAIN;
		return -1;
	}
	return (int)((size_t)n - hl);
}

/* Sends what is held: 0 when nothing is left, -1 + errno (EAGAIN: the rest stays). */
static int held_flush(struct tls_conn *c)
{
	if (c->held_len == c->held_off)
		return 0;
	return held_writev(c, NULL, 0) == -1 ? -1 : 0;
}

static int sock_write(BIO *b, const char *p, int len)
{
	struct tls_conn *c = BIO_get_data(b);
	int n;

	BIO_clear_retry_flags(b);
	if (c->cork && c->held_off == 0 && (size_t)len <= HELD_CAP - c->held_len &&
	    (c->held || (c->held = malloc(HELD_CAP)))) {
		memcpy(c->held + c->held_len, p, (size_t)len);
		c->held_len += (size_t)len;
		return len;
	}
	n = held_writev(c, p, (size_t)len);
	if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
		BIO_set_retry_write(b);
	return n;
}

static int sock_read(BIO *b, char *p, int len)
{
	struct tls_conn *c = BIO_get_data(b);
	ssize_t n;

	BIO_clear_retry_flags(b);
	c->reads++;
	do
		n = read(c->fd, p, (size_t)len);
	while (n == -1 && errno == EINTR);
	if (n > 0) {
		c->drained = n < len;
		return (int)n;
	}
	c->drained = 0;
	if (n == 0)
		c->eof = 1;
	else if (errno == EAGAIN || errno == EWOULDBLOCK)
		BIO_set_retry_read(b);
	return (int)n;
}

static long sock_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	struct tls_conn *c = BIO_get_data(b);

	(void)num;
	switch (cmd) {
	case BIO_CTRL_FLUSH: /* held output leaves when the handshake call returns */
		return 1;
	case BIO_CTRL_EOF:
		return c && c->eof;
	case BIO_C_GET_FD:
		if (!c)
			return -1;
		if (ptr)
			*(int *)ptr = c->fd;
		return c->fd;
	default:
		return 0;
	}
}

static int sock_create(BIO *b)
{
	BIO_set_init(b, 1);
	return 1;
}

static void sock_method_init(void)
{
	BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "canaryd socket");

	if (m &&
	    (BIO_meth_set_write(m, sock_write) != 1 || BIO_meth_set_read(m, sock_read) != 1 ||
	     BIO_meth_set_ctrl(m, sock_ctrl) != 1 || BIO_meth_set_create(m, sock_create) != 1)) {
		BIO_meth_free(m);
		m = NULL;
	}
	sock_method = m;
}

/* Maps SSL_get_error after a failed call to -1 + errno and t->want. */
static int ssl_fail(struct transport *t, struct tls_conn *c, int r)
{
	int e = SSL_get_error(c->ssl, r);

	switch (e) {
	case SSL_ERROR_WANT_READ:
		t->want = EPOLLIN;
		errno = EAGAIN;
		return -1;
	case SSL_ERROR_WANT_WRITE:
		t->want = EPOLLOUT;
		errno = EAGAIN;
		return -1;
	case SSL_ERROR_ZERO_RETURN:
		return 0;
	case SSL_ERROR_SYSCALL:
		c->failed = 1;
		if (errno == 0 || errno == EAGAIN)
			errno = ECONNRESET;
		ERR_clear_error();
		return -1;
	default:
		c->failed = 1;
		ERR_clear_error();
		errno = EPROTO;
		return -1;
	}
}

static ssize_t tls_read(struct transport *t, void *buf, size_t len)
{
	struct tls_conn *c = t->impl;
	size_t got = 0;

	/*
	 * Only a read(2) of this call tells that the socket is empty now: one
	 * from an earlier call may predate data whose edge the owner has since
	 * been woken by (it would never be read).
	 */
	c->drained = 0;
	while (got < len) {
		size_t n = 0;
		int r;

		ERR_clear_error();
		r = SSL_read_ex(c->ssl, (char *)buf + got, len - got, &n);
		if (r == 1) {
			got += n;
			if (c->drained && !SSL_has_pending(c->ssl))
				break; /* all the socket had: a short read, as plain TCP's */
			continue;
		}
		r = ssl_fail(t, c, r);
		if (got > 0)
			return (ssize_t)got; /* the error (or EOF) comes again on the next call */
		return r;
	}
	return (ssize_t)got;
}

static ssize_t tls_write_one(struct transport *t, struct tls_conn *c, const void *p, size_t len)
{
	size_t n = 0;
	int r;

	ERR_clear_error();
	r = SSL_write_ex(c->ssl, p, len, &n);
	if (r == 1)
		return (ssize_t)n;
	r = ssl_fail(t, c, r);
	if (r == 0) {
		errno = EPIPE;
		r = -1;
	}
	return r;
}

/*
 * At most one record (16 KiB) per SSL_write: a large iovec is written where
 * it is, small ones are gathered into a copy first.  A write refused with
 * WANT_WRITE must be retried with at least as many of the same bytes; the
 * owner keeps what was not taken and offers it again from the same first
 * byte, and every call here writes min(what is offered, 16 KiB) from it,
 * so the retry is never shorter.
 */
static ssize_t tls_writev(struct transport *t, const struct iovec *iov, int n)
{
	struct tls_conn *c = t->impl;
	char stage[WRITE_COALESCE];
	size_t total = 0, off = 0; /* off: bytes of iov[i] already taken */
	int i = 0;

	while (i < n) {
		ssize_t w;
		size_t want;

		if (iov[i].iov_len - off >= WRITE_COALESCE) {
			want = WRITE_COALESCE;
			w = tls_write_one(t, c, (const char *)iov[i].iov_base + off, want);
		} else {
			int j = i;
			size_t o = off;

			want = 0;
			while (j < n && want < WRITE_COALESCE) {
				size_t k = iov[j].iov_len - o;

				if (k > WRITE_COALESCE - want)
					k = WRITE_COALESCE - want;
				memcpy(stage + want, (const char *)iov[j].iov_base + o, k);
				want += k;
				o += k;
				if (o == iov[j].iov_len)
					j++, o = 0;
			}
			if (want == 0)
				break;
			w = tls_write_one(t, c, stage, want);
		}
		if (w < 0)
			return total > 0 ? (ssize_t)total : -1;
		total += (size_t)w;
		/* advance (i, off) by w */
		for (size_t left = (size_t)w; left > 0 && i < n;) {
			size_t k = iov[i].iov_len - off;

			if (left < k) {
				off += left;
				left = 0;
			} else {
				left -= k;
				i++, off = 0;
			}
		}
		while (i < n && iov[i].iov_len == off)
			i++, off = 0;
		if ((size_t)w < want)
			break; /* partial: the socket is full */
	}
	return (ssize_t)total;
}

/* Sends what the handshake left held; 0, or -1 + errno (EAGAIN: wait for EPOLLOUT). */
static int handshake_flush(struct transport *t, struct tls_conn *c)
{
	if (held_flush(c) == 0)
		return 0;
	if (errno == EAGAIN || errno == EWOULDBLOCK) {
		t->want = EPOLLOUT;
		errno = EAGAIN;
	} else {
		c->failed = 1;
	}
	return -1;
}

static int tls_handshake(struct transport *t)
{
	struct tls_conn *c = t->impl;
	int r;

	if (c->done)
		return 0;
	if (handshake_flush(t, c) != 0)
		return -1;
	if (!c->finished) {
		ERR_clear_error();
		c->cork = c->srv != NULL;
		r = SSL_do_handshake(c->ssl);
		c->cork = 0;
		if (r != 1) {
			r = ssl_fail(t, c, r);
			if (r == 0) { /* closed during the handshake */
				c->failed = 1;
				errno = ECONNRESET;
				return -1;
			}
			if (c->failed) {
				int e = errno;

				held_flush(c); /* the alert, best effort */
				errno = e;
				return -1;
			}
			if (handshake_flush(t, c) == 0)
				errno = EAGAIN; /* the flight is out: wait for t->want */
			return -1;
		}
		c->finished = 1;
	}
	/*
	 * TLS 1.3: the last call wrote only the session ticket, which waits for
	 * the first response.  TLS 1.2: it wrote the server's Finished, which
	 * the client waits for before it says anything: send it now.
	 */
	if (!(c->srv && SSL_version(c->ssl) == TLS1_3_VERSION) && handshake_flush(t, c) != 0)
		return -1;
	c->done = 1;
	return 0;
}

static void tls_shutdown(struct transport *t)
{
	struct tls_conn *c = t->impl;

	if (!c || !c->done || c->failed)
		return;
	ERR_clear_error();
	SSL_shutdown(c->ssl); /* queues close_notify (after a held ticket); never waits */
	ERR_clear_error();
}

static void tls_free(struct transport *t)
{
	struct tls_conn *c = t->impl;

	if (!c)
		return;
	SSL_free(c->ssl);
	tls_server_unref(c->srv);
	free(c->held);
	free(c);
	t->impl = NULL;
}

static const struct transport_ops tls_ops = {
    tls_read, tls_writev, tls_handshake, tls_shutdown, tls_free,
};

int tls_transport_is_tls(const struct transport *t)
{
	return t && t->ops == &tls_ops;
}

uint64_t tls_transport_client_id(const struct transport *t)
{
	const struct tls_conn *c = tls_transport_is_tls(t) ? t->impl : NULL;

	return c ? c->client_id : 0;
}

const char *tls_transport_sni(const struct transport *t)
{
	const struct tls_conn *c;

	if (!tls_transport_is_tls(t) || !(c = t->impl) || !c->done)
		return NULL;
	return SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name);
}

static int conn_new(struct transport *t, SSL_CTX *ctx, int fd, struct tls_conn **out)
{
	struct tls_conn *c = calloc(1, sizeof(*c));
	BIO *bio = NULL;

	pthread_once(&sock_method_once, sock_method_init);
	if (!c || !sock_method)
		goto out_nomem;
	c->fd = fd;
	c->ssl = SSL_new(ctx);
	bio = BIO_new(sock_method);
	if (!c->ssl || !bio)
		goto out_nomem;
	BIO_set_data(bio, c);
	SSL_set_bio(c->ssl, bio, bio); /* one reference, steals it */
	t->ops = &tls_ops;
	t->fd = fd;
	t->impl = c;
	t->want = 0;
	*out = c;
	return 0;

out_nomem:
	BIO_free(bio);
	if (c)
		SSL_free(c->ssl);
	free(c);
	ERR_clear_error();
	return -ENOMEM;
}

int tls_server_accept(struct tls_server *s, int fd, struct transport *t)
{
	struct tls_conn *c;
	int rc = conn_new(t, s->ctxs[0], fd, &c);

	if (rc != 0)
		return rc;
	c->srv = tls_server_ref(s);
	SSL_set_accept_state(c->ssl);
	return 0;
}

int tls_client_connect(struct tls_client *cl, const char *endpoint, int fd, struct transport *t)
{
	char host[256];
	unsigned char probe[16];
	const char *name = cl->sni;
	struct tls_conn *c;
	int is_ip, rc;
	size_t hl;

	/* "host:port" / "[v6]:port" -> host */
	if (endpoint[0] == '[') {
		const char *end = strchr(endpoint, ']');

		hl = end ? (size_t)(end - endpoint - 1) : 0;
		endpoint++;
	} else {
		const char *colon = strrchr(endpoint, ':');

		hl = colon ? (size_t)(colon - endpoint) : strlen(endpoint);
	}
	if (hl >= sizeof(host))
		hl = 0;
	memcpy(host, endpoint, hl);
	host[hl] = '\0';
	is_ip = inet_pton(AF_INET, host, probe) == 1 || inet_pton(AF_INET6, host, probe) == 1;
	if (!name && !is_ip && host[0])
		name = host;

	rc = conn_new(t, cl->ctx, fd, &c);
	if (rc != 0)
		return rc;
	c->client_id = cl->id;
	SSL_set_connect_state(c->ssl);
	if (name && SSL_set_tlsext_host_name(c->ssl, name) != 1)
		goto out_nomem;
	if (cl->verify) {
		X509_VERIFY_PARAM *param = SSL_get0_param(c->ssl);

		X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		if (name ? SSL_set1_host(c->ssl, name) != 1
		         : X509_VERIFY_PARAM_set1_ip_asc(param, host) != 1)
			goto out_nomem;
	}
	return 0;

out_nomem:
	ERR_clear_error();
	tls_free(t);
	t->ops = NULL;
	return -ENOMEM;
}
