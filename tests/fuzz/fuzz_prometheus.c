/*
 * libFuzzer target for what metric sources read back (src/analysis/source.c):
 * Prometheus query responses (source_parse_prometheus), JSON bodies read
 * through a JSON pointer (source_parse_json_pointer) and an exec check's
 * stdout (source_parse_number); a count check's shapes (issue 18):
 * {"errors", "requests"} at the pointer (source_parse_counts_json) and
 * "ERRORS REQUESTS" on stdout (source_parse_counts), then
 * source_counts_valid().
 *
 * The input's first line is the JSON pointer; the rest is the body, given to
 * every parser.  Checks: a value is only produced with rc 0 and is finite
 * for Prometheus and stdout; valid counts are integers with errors <=
 * requests; on failure the message is a non-empty NUL-terminated string
 * within its buffer.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "analysis/source.h"

#define PROM_FUZZ_MAX (64 * 1024)
#define PTR_MAX       512

static void check_err(int rc, const char *err, size_t len)
{
	if (rc != 0 && (err[0] == '\0' || strnlen(err, len) == len))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *nl = memchr(data, '\n', size);
	size_t plen = nl ? (size_t)(nl - (const char *)data) : 0;
	const char *body = nl ? nl + 1 : (const char *)data;
	size_t blen = size - (size_t)(body - (const char *)data);
	char ptr[PTR_MAX + 1], err[256], *text;
	double v, e, n;
	uint64_t ue, un;
	int rc;

	if (size > PROM_FUZZ_MAX || plen > PTR_MAX)
		return 0;
	memcpy(ptr, data, plen);
	ptr[plen] = '\0';

	err[0] = '\0';
	rc = source_parse_prometheus(body, blen, &v, err, sizeof(err));
	check_err(rc, err, sizeof(err));
	if (rc == 0 && !isfinite(v))
		abort();

	err[0] = '\0';
	rc = source_parse_json_pointer(body, blen, ptr, &v, err, sizeof(err));
	check_err(rc, err, sizeof(err));
	err[0] = '\0';
	rc = source_parse_json_pointer(body, blen, NULL, &v, err, sizeof(err));
	check_err(rc, err, sizeof(err));
	err[0] = '\0';
	rc = source_parse_counts_json(body, blen, ptr, &e, &n, err, sizeof(err));
	check_err(rc, err, sizeof(err));
	if (rc == 0) {
		err[0] = '\0';
		rc = source_counts_valid(e, n, &ue, &un, err, sizeof(err));
		check_err(rc, err, sizeof(err));
		if (rc == 0 && ue > un)
			abort();
	}

	/* stdout is a C string: NUL-terminated copy */
	text = malloc(blen + 1);
	if (!text)
		return 0;
	memcpy(text, body, blen);
	text[blen] = '\0';
	err[0] = '\0';
	rc = source_parse_number(text, &v, err, sizeof(err));
	check_err(rc, err, sizeof(err));
	if (rc == 0 && !isfinite(v))
		abort();
	err[0] = '\0';
	rc = source_parse_counts(text, &e, &n, err, sizeof(err));
	check_err(rc, err, sizeof(err));
	if (rc == 0 && (!isfinite(e) || !isfinite(n)))
		abort();
	free(text);
	return 0;
}
