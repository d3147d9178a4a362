/*
 * eval.c - libcanary's evaluation functions (canary.h).
 *
 * Readers never lock on the fast path.  Each evaluating thread keeps, per
 * client, a reference to the ruleset snapshot it last used in a small
 * thread-local cache; core/snapshot.h's snapshot_acquire() then costs one
 * atomic load while nothing changed, and takes the client's snapshot lock
 * only to move to a newly published ruleset.  No reference count is touched
 * per call, so threads evaluating at once do not bounce a shared cache line.
 * The references go when the thread exits (a pthread key destructor) or when
 * its slot is reused for another client.
 */
#include <pthread.h>
#include <string.h>

#include "internal.h"

#define TLS_SLOTS 4 /* clients a thread evaluates with before slots are reused */

_Static_assert((int)CANARY_REASON_ERROR == (int)FLAG_REASON_ERROR, "reasons in step");
_Static_assert((int)CANARY_REASON_DEFAULT == (int)FLAG_REASON_DEFAULT, "reasons in step");
_Static_assert((int)CANARY_ERROR_GENERAL == (int)FLAG_ERROR_GENERAL, "errors in step");
_Static_assert((int)CANARY_ERROR_TARGETING_KEY_MISSING == (int)FLAG_ERROR_TARGETING_KEY_MISSING,
               "errors in step");

struct tls_slot {
	uint64_t id; /* client id; 0: free */
	struct snap_obj *held;
};

struct tls_cache {
	struct tls_slot slot[TLS_SLOTS];
	unsigned next;
	int registered;
};

static __thread struct tls_cache tls;
static pthread_key_t tls_key;
static pthread_once_t tls_once = PTHREAD_ONCE_INIT;

static void tls_destroy(void *p)
{
	struct tls_cache *t = p;

	for (size_t i = 0; i < TLS_SLOTS; i++) {
		snap_obj_unref(t->slot[i].held);
		t->slot[i].held = NULL;
		t->slot[i].id = 0;
	}
	t->registered = 0;
}

static void tls_key_init(void)
{
	pthread_key_create(&tls_key, tls_destroy);
}

/* The ruleset this thread evaluates with on c, or NULL when c has none yet. */
static const struct csnap *acquire(struct canary_client *c)
{
	struct tls_cache *t = &tls;
	struct tls_slot *s = NULL;

	for (size_t i = 0; i < TLS_SLOTS; i++) {
		if (t->slot[i].id == c->id) {
			s = &t->slot[i];
			break;
		}
	}
	if (!s) {
		if (!t->registered) {
			pthread_once(&tls_once, tls_key_init);
			pthread_setspecific(tls_key, t);
			t->registered = 1;
		}
		s = &t->slot[t->next++ % TLS_SLOTS];
		snap_obj_unref(s->held);
		s->held = NULL;
		s->id = c->id;
	}
	snapshot_acquire(&c->snap, &s->held);
	return (const struct csnap *)s->held;
}

static int ctx_attr(void *p, const char *name, struct str *val)
{
	const struct canary_context *ctx = p;

	if (!ctx)
		return 0;
	if (ctx->targeting_key && strcmp(name, "targetingKey") == 0) {
		*val = str_c(ctx->targeting_key);
		return 1;
	}
	for (size_t i = 0; i < ctx->nattrs; i++) {
		const struct canary_attr *a = &ctx->attrs[i];

		if (a->value && strcmp(a->name, name) == 0) {
			*val = str_c(a->value);
			return 1;
		}
	}
	return 0;
}

static int ctx_valid(const struct canary_context *ctx)
{
	if (!ctx)
		return 1;
	if (ctx->nattrs && !ctx->attrs)
		return 0;
	for (size_t i = 0; i < ctx->nattrs; i++)
		if (!ctx->attrs[i].name)
			return 0;
	return 1;
}

static int fail(struct canary_result *res, enum canary_error e)
{
	res->reason = CANARY_REASON_ERROR;
	res->error = e;
	return -1;
}

/*
 * Evaluates into fr and res (res always filled, variant included).  fr's
 * pointers stay valid until this thread's next evaluation on c.
 */
static int eval(struct canary_client *c, const char *key, const struct canary_context *ctx,
                struct flag_result *fr, struct canary_result *res)
{
	const struct csnap *s = acquire(c);
	int rc;

	memset(fr, 0, sizeof(*fr));
	res->variant[0] = '\0';
	res->value_len = 0;
	res->revision = s ? s->revision : 0;
	if (!s)
		return fail(res, CANARY_ERROR_PROVIDER_NOT_READY);
	if (!key)
		return fail(res, CANARY_ERROR_FLAG_NOT_FOUND);
	if (!ctx_valid(ctx))
		return fail(res, CANARY_ERROR_INVALID_CONTEXT);
	rc = flag_eval(flagset_find(s->set, key, strlen(key)), ctx_attr, (void *)ctx, fr);
	res->reason = (enum canary_reason)fr->reason;
	res->error = (enum canary_error)fr->error;
	if (fr->variant) {
		size_t n = strlen(fr->variant);

		if (n >= CANARY_VARIANT_MAX)
			n = CANARY_VARIANT_MAX - 1;
		memcpy(res->variant, fr->variant, n);
		res->variant[n] = '\0';
	}
	res->value_len = fr->value_json_len;
	return rc;
}

/* Copies s[0..n) into buf[0..size), NUL-terminated and truncated to fit, as snprintf does. */
static void copy_out(char *buf, size_t size, const char *s, size_t n)
{
	if (!buf || !size)
		return;
	if (n >= size)
		n = size - 1;
	memcpy(buf, s, n);
	buf[n] = '\0';
}

int canary_eval(struct canary_client *c, const char *key, const struct canary_context *ctx,
                struct canary_result *res, char *value, size_t value_size)
{
	struct flag_result fr;
	int rc = eval(c, key, ctx, &fr, res);

	/* value_json_len is 0 when no value was resolved */
	copy_out(value, value_size, fr.value_json ? fr.value_json : "", fr.value_json_len);
	return rc;
}

#define TYPE_BOOL   (1u << JSON_TRUE | 1u << JSON_FALSE)
#define TYPE_NUMBER (1u << JSON_INTEGER | 1u << JSON_REAL)
#define TYPE_STRING (1u << JSON_STRING)

/*
 * The resolved value when usable (no error) and of one of the json_types in
 * the mask, else NULL with res->error set.  res may be NULL.
 */
static const json_t *typed(struct canary_client *c, const char *key,
                           const struct canary_context *ctx, unsigned types,
                           struct canary_result *res, struct flag_result *fr)
{
	struct canary_result tmp;

	if (!res)
		res = &tmp;
	if (eval(c, key, ctx, fr, res) != 0)
		return NULL;
	if (!(types & 1u << json_typeof(fr->value))) {
		fail(res, CANARY_ERROR_TYPE_MISMATCH);
		return NULL;
	}
	return fr->value;
}

int canary_eval_bool(struct canary_client *c, const char *key, const struct canary_context *ctx,
                     int def, struct canary_result *res)
{
	struct flag_result fr;
	const json_t *v = typed(c, key, ctx, TYPE_BOOL, res, &fr);

	return v ? json_is_true(v) : def;
}

double canary_eval_double(struct canary_client *c, const char *key,
                          const struct canary_context *ctx, double def, struct canary_result *res)
{
	struct flag_result fr;
	const json_t *v = typed(c, key, ctx, TYPE_NUMBER, res, &fr);

	return v ? json_number_value(v) : def;
}

size_t canary_eval_string(struct canary_client *c, const char *key,
                          const struct canary_context *ctx, const char *def, char *buf, size_t size,
                          struct canary_result *res)
{
	struct flag_result fr;
	const json_t *v = typed(c, key, ctx, TYPE_STRING, res, &fr);
	const char *s = v ? json_string_value(v) : def ? def : "";
	size_t n = v ? json_string_length(v) : strlen(s);

	copy_out(buf, size, s, n);
	return n;
}

const char *canary_reason_name(enum canary_reason r)
{
	return flag_reason_name((enum flag_reason)r);
}

const char *canary_error_name(enum canary_error e)
{
	switch (e) {
	case CANARY_ERROR_TYPE_MISMATCH:
		return "TYPE_MISMATCH";
	case CANARY_ERROR_PROVIDER_NOT_READY:
		return "PROVIDER_NOT_READY";
	default:
		return flag_error_name((enum flag_error)e);
	}
}
