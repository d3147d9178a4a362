/*
 * test_tls.c - src/net/tls.c's pieces (the file is included to reach its
 * statics): the session-ticket key ring (rotation, the previous key still
 * decrypting and renewing, older ones refused), SNI name matching (exact,
 * one-label wildcards, case), and the TLS transport over a socketpair
 * against a client SSL: a handshake driven by EAGAIN + want, reads that
 * fill the caller's buffer, and a write larger than the socket takes,
 * finished through retries with the same bytes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../src/net/tls.c"

/* --- ticket keys ---------------------------------------------------------- */

struct ticket_io {
	EVP_CIPHER_CTX *c;
	EVP_MAC *mac;
	EVP_MAC_CTX *h;
};

static void tio_init(struct ticket_io *t)
{
	t->c = EVP_CIPHER_CTX_new();
	t->mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	assert_non_null(t->mac);
	t->h = EVP_MAC_CTX_new(t->mac);
	assert_non_null(t->c);
	assert_non_null(t->h);
}

static void tio_release(struct ticket_io *t)
{
	EVP_CIPHER_CTX_free(t->c);
	EVP_MAC_CTX_free(t->h);
	EVP_MAC_free(t->mac);
}

/* Encrypts a ticket: its key name into name. */
static void issue(unsigned char name[16])
{
	struct ticket_io t;
	unsigned char iv[EVP_MAX_IV_LENGTH];

	tio_init(&t);
	assert_int_equal(ticket_cb(NULL, name, iv, t.c, t.h, 1), 1);
	tio_release(&t);
}

/* What the callback says to a ticket under key name. */
static int redeem(unsigned char name[16])
{
	struct ticket_io t;
	unsigned char iv[EVP_MAX_IV_LENGTH] = {0};
	int rc;

	tio_init(&t);
	rc = ticket_cb(NULL, name, iv, t.c, t.h, 0);
	tio_release(&t);
	return rc;
}

/* Makes the current key look older than the rotation period. */
static void age_current_key(void)
{
	uint64_t gen = atomic_load(&keys.gen);

	keys.slot[gen % 3].born_ms = now_ms() - TICKET_ROTATE_MS - 1;
}

static void test_ticket_keys_rotate_and_the_previous_one_still_decrypts(void **state)
{
	unsigned char k0[16], again[16], k1[16], k2[16], bogus[16] = {0};

	(void)state;
	pthread_once(&keys.once, keys_init);
	assert_true(keys.ok);
	issue(k0);
	issue(again);
	assert_memory_equal(k0, again, 16); /* no rotation within the period */
	assert_int_equal(redeem(k0), 1);
	assert_int_equal(redeem(bogus), 0); /* unknown: a full handshake */

	age_current_key();
	issue(k1);
	assert_memory_not_equal(k0, k1, 16);
	assert_int_equal(redeem(k1), 1);
	assert_int_equal(redeem(k0), 2); /* the previous key: accepted, renewed */

	age_current_key();
	issue(k2);
	assert_memory_not_equal(k1, k2, 16);
	assert_int_equal(redeem(k2), 1);
	assert_int_equal(redeem(k1), 2);
	assert_int_equal(redeem(k0), 0); /* two rotations old: refused */
}

/* --- SNI names ------------------------------------------------------------ */

static void test_sni_exact_then_one_label_wildcard_case_insensitive(void **state)
{
	struct tls_server s = {0};
	SSL_CTX *a = (SSL_CTX *)0x1, *w = (SSL_CTX *)0x2, *x = (SSL_CTX *)0x3;

	(void)state;
	s.names = calloc(MAX_NAMES, sizeof(*s.names));
	assert_non_null(s.names);
	assert_int_equal(add_name(&s, "a.test", 6, a), 0);
	assert_int_equal(add_name(&s, "*.w.test", 8, w), 0);
	assert_int_equal(add_name(&s, "x.w.test", 8, x), 0);
	assert_int_equal(add_name(&s, "A.TEST", 6, x), 0); /* already named: the first wins */
	assert_int_equal(s.nnames, 3);
	assert_int_equal(add_name(&s, "bad\0name", 8, x), 0); /* a NUL inside: ignored */
	assert_int_equal(s.nnames, 3);

	assert_ptr_equal(server_pick(&s, "a.test"), a);
	assert_ptr_equal(server_pick(&s, "A.Test"), a);
	assert_ptr_equal(server_pick(&s, "y.w.test"), w);
	assert_ptr_equal(server_pick(&s, "x.w.test"), x); /* exact beats the wildcard */
	assert_null(server_pick(&s, "w.test"));           /* a wildcard needs its label */
	assert_null(server_pick(&s, "z.y.w.test"));       /* ... and only one */
	assert_null(server_pick(&s, ".w.test"));
	assert_null(server_pick(&s, "b.test"));
	assert_null(server_pick(&s, NULL));
	for (size_t i = 0; i < s.nnames; i++)
		free(s.names[i].name);
	free(s.names);
}

/* --- the transport over a socketpair ----------------------------------------- */

/* A throwaway certificate and key, made in memory. */
static void self_signed(X509 **xo, EVP_PKEY **ko)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	X509_NAME *n;

	assert_non_null(k);
	assert_non_null(x);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, k);
	n = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"a.test", -1, -1,
	                           0);
	X509_set_issuer_name(x, n);
	assert_true(X509_sign(x, k, EVP_sha256()) > 0);
	*xo = x;
	*ko = k;
}

/* A server built the way server_new() does, over an in-memory certificate. */
static struct tls_server *test_server(void)
{
	struct tls_server *s = calloc(1, sizeof(*s));
	X509 *x;
	EVP_PKEY *k;
	SSL_CTX *ctx;

	assert_non_null(s);
	atomic_init(&s->refs, 1);
	s->ctxs = calloc(1, sizeof(*s->ctxs));
	s->names = calloc(MAX_NAMES, sizeof(*s->names));
	pthread_once(&keys.once, keys_init);
	ctx = SSL_CTX_new(TLS_server_method());
	assert_non_null(ctx);
	server_ctx_options(ctx, s, TLS1_2_VERSION);
	self_signed(&x, &k);
	assert_int_equal(SSL_CTX_use_certificate(ctx, x), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey(ctx, k), 1);
	X509_free(x);
	EVP_PKEY_free(k);
	s->ctxs[s->nctx++] = ctx;
	assert_int_equal(cert_names(s, ctx), 0);
	return s;
}

static void nonblock(int fd)
{
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/* Waits (bounded) until fd is ready for what want asks. */
static void wait_fd(int fd, uint32_t want)
{
	struct pollfd p = {.fd = fd, .events = want == EPOLLOUT ? POLLOUT : POLLIN};

	assert_true(poll(&p, 1, 5000) == 1);
}

/* One step of the client's handshake; 1 when done. */
static int client_step(SSL *c)
{
	int r = SSL_do_handshake(c);

	if (r == 1)
		return 1;
	r = SSL_get_error(c, r);
	assert_true(r == SSL_ERROR_WANT_READ || r == SSL_ERROR_WANT_WRITE);
	return 0;
}

static void test_transport_handshake_reads_and_a_large_write_through_retries(void **state)
{
	struct tls_server *s = test_server();
	SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
	struct transport t;
	int sv[2], sbuf = 4096, server_done = 0, client_done = 0;
	SSL *c;
	char big[200000], got[sizeof(big)], small[64];
	size_t off = 0, rd = 0;
	int eagain_writes = 0;
	uint64_t reads;

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	nonblock(sv[0]);
	nonblock(sv[1]);
	/* a small socket buffer, so the big write has to wait for the reader */
	setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sbuf, sizeof(sbuf));
	setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &sbuf, sizeof(sbuf));
	assert_int_equal(tls_server_accept(s, sv[0], &t), 0);
	tls_server_unref(s); /* the transport keeps its own reference */
	assert_true(tls_transport_is_tls(&t));
	c = SSL_new(cctx);
	SSL_set_fd(c, sv[1]);
	SSL_set_connect_state(c);
	SSL_set_tlsext_host_name(c, "a.test");

	for (int i = 0; i < 100 && !(server_done && client_done); i++) {
		if (!client_done)
			client_done = client_step(c);
		if (!server_done) {
			int r = t.ops->handshake(&t);

			if (r == 0)
				server_done = 1;
			else
				assert_true(errno == EAGAIN &&
				            (t.want == EPOLLIN || t.want == EPOLLOUT));
		}
	}
	assert_true(server_done && client_done);
	assert_string_equal(tls_transport_sni(&t), "a.test");
	assert_int_equal(tls_transport_client_id(&t), 0);

	/* TLS 1.3: the session ticket waits for the first response */
	assert_int_equal(SSL_version(c), TLS1_3_VERSION);
	assert_true(((struct tls_conn *)t.impl)->held_len > 0);
	assert_int_equal(recv(sv[1], small, 1, MSG_PEEK | MSG_DONTWAIT), -1);
	assert_int_equal(errno, EAGAIN);

	/* nothing sent yet: EAGAIN waiting to read */
	assert_int_equal(t.ops->read(&t, small, sizeof(small)), -1);
	assert_int_equal(errno, EAGAIN);
	assert_int_equal(t.want, EPOLLIN);

	/* two records from the client come back as one read that fills what it
	 * can, from one read(2): a short one says the socket is empty */
	assert_int_equal(SSL_write(c, "hello ", 6), 6);
	assert_int_equal(SSL_write(c, "world", 5), 5);
	wait_fd(sv[0], EPOLLIN);
	reads = ((struct tls_conn *)t.impl)->reads;
	assert_int_equal(t.ops->read(&t, small, sizeof(small)), 11);
	assert_memory_equal(small, "hello world", 11);
	assert_int_equal(((struct tls_conn *)t.impl)->reads, reads + 1);

	/* what an earlier call left buffered is no proof the socket is empty:
	 * the bytes that came since (and woke the owner) are read too */
	assert_int_equal(SSL_write(c, "abcdef", 6), 6);
	wait_fd(sv[0], EPOLLIN);
	assert_int_equal(t.ops->read(&t, small, 3), 3);
	assert_int_equal(SSL_write(c, "ghi", 3), 3);
	wait_fd(sv[0], EPOLLIN);
	assert_int_equal(t.ops->read(&t, small, sizeof(small)), 6);
	assert_memory_equal(small, "defghi", 6);

	/* a write far bigger than the socket: partial counts and EAGAIN, retried
	 * from the first byte not taken (as the owners do), until all is read */
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (char)(i * 7 + 3);
	for (int i = 0; i < 100000 && rd < sizeof(big); i++) {
		if (off < sizeof(big)) {
			struct iovec iov[2] = {{big + off, (sizeof(big) - off) / 3},
			                       {big + off + (sizeof(big) - off) / 3,
			                        sizeof(big) - off - (sizeof(big) - off) / 3}};
			ssize_t w = t.ops->writev(&t, iov, 2);

			if (w == -1) {
				assert_int_equal(errno, EAGAIN);
				assert_int_equal(t.want, EPOLLOUT);
				eagain_writes++;
			} else {
				off += (size_t)w;
			}
		}
		for (;;) {
			int n = SSL_read(c, got + rd, (int)(sizeof(got) - rd));

			if (n <= 0) {
				assert_int_equal(SSL_get_error(c, n), SSL_ERROR_WANT_READ);
				break;
			}
			rd += (size_t)n;
		}
	}
	assert_true(eagain_writes > 0);
	assert_int_equal(off, sizeof(big));
	assert_int_equal(rd, sizeof(big));
	assert_memory_equal(got, big, sizeof(big));
	/* the held ticket went out ahead of the response */
	assert_int_equal(((struct tls_conn *)t.impl)->held_len, 0);
	assert_true(SSL_SESSION_has_ticket(SSL_get0_session(c)));

	/* an orderly end: the client reads close_notify as EOF */
	transport_release(&t, 1);
	close(sv[0]);
	wait_fd(sv[1], EPOLLIN);
	assert_true(SSL_read(c, small, sizeof(small)) <= 0);
	assert_int_equal(SSL_get_error(c, 0), SSL_ERROR_ZERO_RETURN);
	SSL_free(c);
	SSL_CTX_free(cctx);
	close(sv[1]);
}

/* Server transport over sv[0], client SSL over sv[1], both handshakes driven to the end. */
static SSL *pair_handshake(struct tls_server *s, SSL_CTX *cctx, SSL_SESSION *resume, int sv[2],
                           struct transport *t)
{
	int server_done = 0, client_done = 0;
	SSL *c;

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	nonblock(sv[0]);
	nonblock(sv[1]);
	assert_int_equal(tls_server_accept(s, sv[0], t), 0);
	c = SSL_new(cctx);
	SSL_set_fd(c, sv[1]);
	SSL_set_connect_state(c);
	SSL_set_tlsext_host_name(c, "a.test");
	if (resume)
		assert_int_equal(SSL_set_session(c, resume), 1);
	for (int i = 0; i < 100 && !(server_done && client_done); i++) {
		if (!client_done)
			client_done = client_step(c);
		if (!server_done) {
			if (t->ops->handshake(t) == 0)
				server_done = 1;
			else
				assert_int_equal(errno, EAGAIN);
		}
	}
	assert_true(server_done && client_done);
	return c;
}

/* One response from the server, read by the client (which takes in any ticket). */
static void pair_respond(struct transport *t, SSL *c, int fd)
{
	char buf[16];

	assert_int_equal(transport_write(t, "ok", 2), 2);
	wait_fd(fd, EPOLLIN);
	assert_int_equal(SSL_read(c, buf, sizeof(buf)), 2);
}

static void pair_close(struct transport *t, SSL *c, int sv[2])
{
	SSL_shutdown(c); /* a session ended without it is not resumed */
	transport_release(t, 0);
	SSL_free(c);
	close(sv[0]);
	close(sv[1]);
}

/*
 * TLS 1.3 clients use a ticket once (RFC 8446 C.4; OpenSSL's does): each
 * resumption must bring a new ticket, or every other connection is a full
 * handshake (an RSA signature each).
 */
static void test_tls13_every_resumption_issues_a_new_ticket(void **state)
{
	struct tls_server *s = test_server();
	SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
	SSL_SESSION *sess = NULL;
	struct transport t;
	int sv[2];

	(void)state;
	SSL_CTX_set_session_cache_mode(cctx, SSL_SESS_CACHE_CLIENT);
	for (int i = 0; i < 3; i++) {
		SSL *c = pair_handshake(s, cctx, sess, sv, &t);
		SSL_SESSION *next;

		assert_int_equal(SSL_version(c), TLS1_3_VERSION);
		assert_int_equal(SSL_session_reused(c), i > 0);
		pair_respond(&t, c, sv[1]);
		next = SSL_get1_session(c);
		assert_true(SSL_SESSION_has_ticket(next));
		assert_ptr_not_equal(next, sess); /* a new ticket came */
		SSL_SESSION_free(sess);
		sess = next;
		pair_close(&t, c, sv);
	}
	SSL_SESSION_free(sess);
	tls_server_unref(s);
	SSL_CTX_free(cctx);
}

/*
 * TLS 1.2: the server's last flight (ticket, Finished) is what the client
 * waits for before it sends anything: it is never held for a response.
 */
static void test_tls12_last_flight_is_sent_at_once_and_resumes(void **state)
{
	struct tls_server *s = test_server();
	SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
	SSL_SESSION *sess = NULL;
	struct transport t;
	int sv[2];

	(void)state;
	SSL_CTX_set_max_proto_version(cctx, TLS1_2_VERSION);
	for (int i = 0; i < 2; i++) {
		SSL *c = pair_handshake(s, cctx, sess, sv, &t);

		assert_int_equal(SSL_version(c), TLS1_2_VERSION);
		assert_int_equal(SSL_session_reused(c), i > 0);
		assert_int_equal(((struct tls_conn *)t.impl)->held_len, 0);
		pair_respond(&t, c, sv[1]);
		if (!sess)
			sess = SSL_get1_session(c);
		pair_close(&t, c, sv);
	}
	SSL_SESSION_free(sess);
	tls_server_unref(s);
	SSL_CTX_free(cctx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_ticket_keys_rotate_and_the_previous_one_still_decrypts),
	    cmocka_unit_test(test_sni_exact_then_one_label_wildcard_case_insensitive),
	    cmocka_unit_test(test_transport_handshake_reads_and_a_large_write_through_retries),
	    cmocka_unit_test(test_tls13_every_resumption_issues_a_new_ticket),
	    cmocka_unit_test(test_tls12_last_flight_is_sent_at_once_and_resumes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
