/*
 * libFuzzer target for the config module's scalar parsers, the validators
 * the YAML loader and the admin API share (src/config/config_scalar.c):
 * durations, percentages, sizes, addresses, RFC 3339 times, times of day,
 * `window`, semantic versions, URLs and names.
 *
 * Every parser sees the whole input as one NUL-terminated string (bytes
 * after an embedded NUL are ignored, as in a C string from YAML).  Checks:
 * an accepted percentage is at most 100% and an accepted window's minutes
 * lie in a day; an accepted address formats and parses back to itself; an
 * RFC 3339 time in ms agrees with the one in seconds.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "core/str.h"

#define SCALAR_MAX 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char s[SCALAR_MAX + 1], back[300];
	struct config_addr a, b;
	struct config_window w;
	const char *why = NULL;
	unsigned long long u64;
	uint64_t ms, bytes;
	uint32_t th, minute;
	int64_t secs, msecs;
	double d;

	if (size > SCALAR_MAX)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';

	(void)config_parse_duration(s, &ms);
	if (config_parse_percent(s, &th) == 0 && th > 100000)
		abort();
	if (str_to_double(str_make(s, size), &d) == 0 && config_percent_from_double(d, &th) == 0 &&
	    th > 100000)
		abort();
	(void)str_to_u64(str_make(s, size), &u64);
	(void)config_parse_size(s, &bytes);
	if (config_parse_addr(s, &a, &why) == 0) {
		if (config_addr_format(&a, back, sizeof(back)) < 0 ||
		    config_parse_addr(back, &b, NULL) != 0 || b.port != a.port ||
		    strcmp(a.host, b.host) != 0)
			abort();
	} else if (!why) {
		abort();
	}
	if (config_parse_rfc3339(s, &secs) == 0) {
		if (config_parse_rfc3339_ms(s, &msecs) != 0)
			abort();
		if (msecs / 1000 - secs > 1 || secs - msecs / 1000 > 1)
			abort();
	}
	if (config_parse_time_of_day(s, &minute) == 0 && minute >= 24 * 60)
		abort();
	if (config_parse_window(s, &w) == 0 && (w.start_min >= 24 * 60 || w.end_min > 24 * 60))
		abort();
	(void)config_valid_semver(s);
	(void)config_valid_url(s);
	(void)config_valid_name(s);
	return 0;
}
