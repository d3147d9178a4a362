/*
 * bucket_vectors.h - reads the test vectors of docs/bucketing.md (the
 * ```vectors block) so every implementation is tested against the page.
 * Shared by the tests of the proxy, the flag evaluator and the client library.
 */
#ifndef TESTS_BUCKET_VECTORS_H
#define TESTS_BUCKET_VECTORS_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct bucket_vector {
	char salt[128];
	char key[256];
	uint32_t hash;
	uint32_t bucket;
};

/* Copies a "quoted" field starting at *p into out; advances *p.  -1 on error. */
static int bv_quoted(const char **p, char *out, size_t n)
{
	const char *s = *p, *e;

	while (*s == ' ')
		s++;
	if (*s != '"')
		return -1;
	e = strchr(s + 1, '"');
	if (!e || (size_t)(e - s - 1) >= n)
		return -1;
	memcpy(out, s + 1, (size_t)(e - s - 1));
	out[e - s - 1] = '\0';
	*p = e + 1;
	return 0;
}

/* Loads up to max vectors from path; returns the count, or -1. */
static int bucket_vectors_load(const char *path, struct bucket_vector *v, int max)
{
	FILE *f = fopen(path, "r");
	char line[1024];
	int in = 0, n = 0;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f) && n < max) {
		const char *p = line;
		char *end;

		if (strncmp(line, "```vectors", 10) == 0) {
			in = 1;
			continue;
		}
		if (!in)
			continue;
		if (strncmp(line, "```", 3) == 0)
			break;
		if (bv_quoted(&p, v[n].salt, sizeof(v[n].salt)) ||
		    bv_quoted(&p, v[n].key, sizeof(v[n].key)))
			goto fail;
		v[n].hash = (uint32_t)strtoul(p, &end, 10);
		v[n].bucket = (uint32_t)strtoul(end, &end, 10);
		n++;
	}
	fclose(f);
	return n;
fail:
	fclose(f);
	return -1;
}

#endif
