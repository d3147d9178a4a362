/*
 * libFuzzer target for the YAML config loader (src/config/): the whole input
 * is a canaryd.yaml, loaded with config_load_string() as `canaryd --check`
 * would (YAML events -> document tree -> ${ENV} expansion -> every section's
 * validator -> cross-references).  A few environment variables are set once
 * so ${FZ_*} expansions resolve (the seed corpus uses them); anything else
 * is an unset variable, which is a config error.
 *
 * A `secret_file` is only ever read (relative paths from the working
 * directory); nothing is written.  Checks: a config comes back exactly when
 * no error was recorded, every error formats, and the summary line fits.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"

#define YAML_MAX (64 * 1024)

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	setenv("FZ_PORT", "8080", 1);
	setenv("FZ_HOST", "127.0.0.1", 1);
	setenv("FZ_SECRET", "s3cret-token", 1);
	setenv("FZ_EMPTY", "", 1);
	setenv("FZ_PCT", "12.5", 1);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config_errors errs;
	struct config *cfg;
	char line[1024];
	size_t n;

	if (size > YAML_MAX)
		return 0;
	config_errors_init(&errs);
	cfg = config_load_string("fuzz.yaml", (const char *)data, size, &errs);
	n = config_errors_count(&errs);
	if ((cfg != NULL) != (n == 0))
		abort();
	for (size_t i = 0; i < n; i++)
		if (config_error_format(config_errors_get(&errs, i), line, sizeof(line)) < 0)
			abort();
	if (cfg) {
		if (config_summary(cfg, line, sizeof(line)) < 0)
			abort();
		config_free(cfg);
	}
	config_errors_release(&errs);
	return 0;
}
