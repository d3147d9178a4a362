/*
 * config_find.c - lookups by name in a loaded model (config.h's *_find).
 *
 * A leaf of the module: the section parsers (config_flag.c,
 * config_rollout.c) and the loader (config.c) all call down into it, and it
 * calls nothing of theirs, so the module's call graph stays acyclic
 * (scripts/check-cycles).  libcanary links it too, without the loader.
 */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "config/config.h"

/* --- lookups ------------------------------------------------------------------------------------ */

#define FIND(arr, cnt, field, key)                                                \
	do {                                                                      \
		for (size_t i_ = 0; key && i_ < (cnt); i_++)                      \
			if ((arr)[i_].field && strcmp((arr)[i_].field, key) == 0) \
				return &(arr)[i_];                                \
		return NULL;                                                      \
	} while (0)

struct config_service *config_service_find(const struct config *cfg, const char *name)
{
	FIND(cfg->services, cfg->nservices, name, name);
}

struct config_version *config_version_find(const struct config_service *svc, const char *name)
{
	FIND(svc->versions, svc->nversions, name, name);
}

const char *config_version_names(const struct config_service *svc, char *buf, size_t len)
{
	size_t off = 0;

	if (len)
		buf[0] = '\0';
	for (size_t i = 0; i < svc->nversions && off < len; i++) {
		int n = snprintf(buf + off, len - off, "%s%s", i ? ", " : "",
		                 svc->versions[i].name ? svc->versions[i].name : "?");

		if (n < 0)
			break;
		off += (size_t)n;
	}
	return len ? buf : "";
}

struct config_segment *config_segment_find(const struct config *cfg, const char *name)
{
	FIND(cfg->segments, cfg->nsegments, name, name);
}

struct config_flag *config_flag_find(const struct config *cfg, const char *name)
{
	FIND(cfg->flags, cfg->nflags, name, name);
}

struct config_variant *config_variant_find(const struct config_flag *flag, const char *name)
{
	FIND(flag->variants, flag->nvariants, name, name);
}

struct config_token *config_token_find(const struct config *cfg, const char *name)
{
	FIND(cfg->admin.tokens, cfg->admin.ntokens, name, name);
}

struct config_listener *config_listener_find(const struct config *cfg, const char *name)
{
	FIND(cfg->listeners, cfg->nlisteners, name, name);
}

struct config_rollout *config_rollout_find(const struct config *cfg, const char *name)
{
	FIND(cfg->rollouts, cfg->nrollouts, name, name);
}

struct config_target *config_target_find(const struct config_rollout *ro, const char *name)
{
	FIND(ro->targets, ro->ntargets, name, name);
}
