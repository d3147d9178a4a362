#include "api/auth.h"

#include <string.h>

static const struct {
	const char *name;
	unsigned bit;
} scope_names[] = {
    {"read", SCOPE_READ},
    {"flags:write", SCOPE_FLAGS_WRITE},
    {"rollouts:write", SCOPE_ROLLOUTS_WRITE},
    {"approve", SCOPE_APPROVE},
    {"evaluate", SCOPE_EVALUATE},
    {"admin", SCOPE_ADMIN},
};

unsigned auth_scope_parse(const char *name)
{
	for (size_t i = 0; i < sizeof(scope_names) / sizeof(scope_names[0]); i++)
		if (strcmp(name, scope_names[i].name) == 0)
			return scope_names[i].bit;
	return 0;
}

const char *auth_scope_name(unsigned scope)
{
	for (size_t i = 0; i < sizeof(scope_names) / sizeof(scope_names[0]); i++)
		if (scope == scope_names[i].bit)
			return scope_names[i].name;
	return "?";
}

int auth_ct_equal(struct str a, struct str b)
{
	/* walk the longer length so a short guess costs as much as a long one */
	size_t n = a.len > b.len ? a.len : b.len;
	unsigned char diff = (unsigned char)(a.len != b.len);

	for (size_t i = 0; i < n; i++) {
		unsigned char x = i < a.len ? (unsigned char)a.p[i] : 0;
		unsigned char y = i < b.len ? (unsigned char)b.p[i] : 0;

		diff |= (unsigned char)(x ^ y);
	}
	return diff == 0;
}

enum auth_result auth_check(const struct auth_token *tokens, size_t n, struct str authorization,
                            unsigned scope, const struct auth_token **who)
{
	const struct auth_token *match = NULL;
	struct str presented;

	*who = NULL;
	authorization = str_trim(authorization);
	if (authorization.len < 8 || strncasecmp(authorization.p, "Bearer ", 7) != 0)
		return AUTH_MISSING;
	presented = str_trim(str_make(authorization.p + 7, authorization.len - 7));
	if (presented.len == 0)
		return AUTH_MISSING;
	/* compare against every token, not stopping at the first match */
	for (size_t i = 0; i < n; i++) {
		if (!tokens[i].secret || !tokens[i].secret[0])
			continue;
		if (auth_ct_equal(presented, str_c(tokens[i].secret)) && !match)
			match = &tokens[i];
	}
	if (!match)
		return AUTH_INVALID;
	*who = match;
	if (scope == 0 || (match->scopes & (scope | SCOPE_ADMIN)))
		return AUTH_OK;
	return AUTH_FORBIDDEN;
}
