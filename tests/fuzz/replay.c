/*
 * replay.c - a main() for the fuzz targets in builds without libFuzzer (gcc,
 * the ASan build): feeds every regular file named on the command line, or
 * found directly in a directory named there, to LLVMFuzzerTestOneInput once,
 * in name order.  ctest runs it over each target's seed corpus
 * (tests/fuzz/corpus/<name>), so `make test` replays every corpus under the
 * normal and the sanitized build.  A crash, a sanitizer report or a failed
 * check inside the target fails the run; so does a missing or empty corpus.
 *
 * Inputs are read whole into a malloc'd buffer of exactly their size, so ASan
 * sees an overread as libFuzzer would.  Files over REPLAY_MAX bytes are an
 * error (corpora are small by design).
 */
#include <dirent.h>
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define REPLAY_MAX (1024 * 1024)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

/* Runs the target on one file; 0, or -1 after a message. */
static int replay_file(const char *path)
{
	FILE *fp = fopen(path, "rb");
	uint8_t *data = NULL;
	long len;
	int rc = -1;

	if (!fp) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (fseek(fp, 0, SEEK_END) != 0 || (len = ftell(fp)) < 0 || fseek(fp, 0, SEEK_SET) != 0) {
		fprintf(stderr, "replay: %s: cannot size\n", path);
		goto out_close;
	}
	if (len > REPLAY_MAX) {
		fprintf(stderr, "replay: %s: %ld bytes, over %d\n", path, len, REPLAY_MAX);
		goto out_close;
	}
	data = malloc(len ? (size_t)len : 1);
	if (!data || fread(data, 1, (size_t)len, fp) != (size_t)len) {
		fprintf(stderr, "replay: %s: read failed\n", path);
		goto out_free;
	}
	LLVMFuzzerTestOneInput(data, (size_t)len);
	rc = 0;
out_free:
	free(data);
out_close:
	fclose(fp);
	return rc;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Replays the regular files directly in dir; their number, or -1. */
static long replay_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char **names = NULL, path[4096];
	size_t n = 0, cap = 0;
	long done = -1;

	if (!d) {
		fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno));
		return -1;
	}
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		if (n == cap) {
			char **nn = realloc(names, (cap ? cap * 2 : 64) * sizeof(*names));

			if (!nn)
				goto out;
			names = nn;
			cap = cap ? cap * 2 : 64;
		}
		names[n] = strdup(de->d_name);
		if (!names[n])
			goto out;
		n++;
	}
	qsort(names, n, sizeof(*names), by_name);
	done = 0;
	for (size_t i = 0; i < n; i++) {
		struct stat sb;

		if (snprintf(path, sizeof(path), "%s/%s", dir, names[i]) >= (int)sizeof(path) ||
		    stat(path, &sb) != 0 || !S_ISREG(sb.st_mode))
			continue;
		if (replay_file(path) != 0) {
			done = -1;
			goto out;
		}
		done++;
	}
out:
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	closedir(d);
	return done;
}

int main(int argc, char **argv)
{
	long total = 0;

	if (argc < 2) {
		fprintf(stderr, "usage: %s CORPUS_DIR_OR_FILE...\n", argv[0]);
		return 2;
	}
	if (LLVMFuzzerInitialize)
		LLVMFuzzerInitialize(&argc, &argv);
	for (int i = 1; i < argc; i++) {
		struct stat sb;
		long n;

		if (stat(argv[i], &sb) != 0) {
			fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
			return 1;
		}
		n = S_ISDIR(sb.st_mode) ? replay_dir(argv[i]) : replay_file(argv[i]) == 0 ? 1 : -1;
		if (n < 0)
			return 1;
		total += n;
	}
	if (total == 0) {
		fprintf(stderr, "replay: no inputs found\n");
		return 1;
	}
	printf("replay: %ld inputs ok\n", total);
	return 0;
}
