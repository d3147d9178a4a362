/*
 * auth.h - bearer tokens with scopes (SPEC 3 admin.tokens, 7).
 *
 * Secrets are compared in constant time: the comparison always walks the
 * whole presented token and every configured secret, so the time taken does
 * not tell how many leading bytes matched or which token was close.
 */
#ifndef API_AUTH_H
#define API_AUTH_H

#include <stddef.h>

#include "config/config.h"
#include "core/str.h"

/* The scopes of SPEC 3 are the configuration's scope bits, one definition. */
enum auth_scope {
	SCOPE_READ = CONFIG_SCOPE_READ,
	SCOPE_FLAGS_WRITE = CONFIG_SCOPE_FLAGS_WRITE,
	SCOPE_ROLLOUTS_WRITE = CONFIG_SCOPE_ROLLOUTS_WRITE,
	SCOPE_APPROVE = CONFIG_SCOPE_APPROVE,
	SCOPE_EVALUATE = CONFIG_SCOPE_EVALUATE,
	SCOPE_ADMIN = CONFIG_SCOPE_ADMIN, /* implies every other scope */
};

struct auth_token {
	const char *name;   /* identity in the audit log and for approvals */
	const char *secret; /* NUL-terminated, not owned */
	unsigned scopes;    /* enum auth_scope bits */
};

/* Parses one scope name ("read", "flags:write", ...); 0 if unknown. */
unsigned auth_scope_parse(const char *name);
/* The name of a single scope bit, for messages. */
const char *auth_scope_name(unsigned scope);

enum auth_result {
	AUTH_OK = 0,
	AUTH_MISSING = 401,   /* no or malformed Authorization header */
	AUTH_INVALID = 4011,  /* a token that matches no secret (still a 401) */
	AUTH_FORBIDDEN = 403, /* valid token without the scope */
};

/*
 * Checks an Authorization header value against tokens[0..n) for scope.
 * A scope of 0 means "any valid token".  On AUTH_OK or AUTH_FORBIDDEN,
 * *who is the matching token (its name is the actor).
 */
enum auth_result auth_check(const struct auth_token *tokens, size_t n, struct str authorization,
                            unsigned scope, const struct auth_token **who);

/* Constant-time equality of a and b (time depends on a.len and b.len only). */
int auth_ct_equal(struct str a, struct str b);

#endif
