/*
 * fleet_subs.c - N simulated fleet subscribers for bench/fleet.sh: N libpq
 * connections that LISTEN on channel "canaryd" and, on each notification,
 * read the changes feed past their last revision (the query a canaryd node
 * runs, fleet/fleet.c).  For every notification handled it prints
 *   REV SUBSCRIBER WALL_US
 * (the highest revision read, which subscriber, the wall clock in µs once the
 * feed was read), so the driver can measure change -> read by every one.
 * Stops on stdin EOF.
 *
 *   bench_fleet_subs URL N
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include <libpq-fe.h>

#define MAX_SUBS 500
#define FEED_SQL                                                   \
	"SELECT c.rev, c.kind, c.name, d.body FROM changes c"      \
	" LEFT JOIN docs d ON d.kind = c.kind AND d.name = c.name" \
	" WHERE c.rev > $1::bigint ORDER BY c.rev LIMIT 500"

static uint64_t wall_us(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec;
}

static int64_t read_feed(PGconn *c, int64_t since)
{
	char s[24];
	const char *p[1] = {s};
	PGresult *r;
	int64_t last = since;

	snprintf(s, sizeof(s), "%" PRId64, since);
	r = PQexecParams(c, FEED_SQL, 1, NULL, p, NULL, NULL, 0);
	if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0)
		last = strtoll(PQgetvalue(r, PQntuples(r) - 1, 0), NULL, 10);
	PQclear(r);
	return last;
}

int main(int argc, char **argv)
{
	static PGconn *conns[MAX_SUBS];
	static int64_t applied[MAX_SUBS];
	static struct pollfd pfd[MAX_SUBS + 1];
	static int waiting[MAX_SUBS];
	long n;

	if (argc != 3 || (n = strtol(argv[2], NULL, 10)) < 1 || n > MAX_SUBS) {
		fprintf(stderr, "usage: bench_fleet_subs URL N (1..%d)\n", MAX_SUBS);
		return 2;
	}
	for (long i = 0; i < n; i++) {
		PGresult *r;

		conns[i] = PQconnectdb(argv[1]);
		if (PQstatus(conns[i]) != CONNECTION_OK) {
			fprintf(stderr, "connect: %s", PQerrorMessage(conns[i]));
			return 1;
		}
		r = PQexec(conns[i], "LISTEN canaryd");
		PQclear(r);
		applied[i] = read_feed(conns[i], 0);
		pfd[i].fd = PQsocket(conns[i]);
		pfd[i].events = POLLIN;
	}
	pfd[n].fd = 0;
	pfd[n].events = POLLIN;
	printf("ready %ld\n", n);
	fflush(stdout);
	for (;;) {
		if (poll(pfd, (nfds_t)n + 1, -1) < 0 && errno != EINTR)
			break;
		if (pfd[n].revents) {
			char b[64];

			if (read(0, b, sizeof(b)) <= 0)
				break;
		}
		/* every notified subscriber sends its read at once, as separate nodes would */
		for (long i = 0; i < n; i++) {
			PGnotify *nt;
			char since[24];
			const char *p[1] = {since};

			waiting[i] = 0;
			if (!pfd[i].revents)
				continue;
			PQconsumeInput(conns[i]);
			while ((nt = PQnotifies(conns[i])) != NULL) {
				waiting[i] = 1;
				PQfreemem(nt);
			}
			if (!waiting[i])
				continue;
			snprintf(since, sizeof(since), "%" PRId64, applied[i]);
			if (!PQsendQueryParams(conns[i], FEED_SQL, 1, NULL, p, NULL, NULL, 0))
				waiting[i] = 0;
		}
		for (long i = 0; i < n; i++) {
			PGresult *r;

			if (!waiting[i])
				continue;
			while ((r = PQgetResult(conns[i])) != NULL) {
				if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0)
					applied[i] =
					    strtoll(PQgetvalue(r, PQntuples(r) - 1, 0), NULL, 10);
				PQclear(r);
			}
			printf("%" PRId64 " %ld %" PRIu64 "\n", applied[i], i, wall_us());
		}
		fflush(stdout);
	}
	for (long i = 0; i < n; i++)
		PQfinish(conns[i]);
	return 0;
}
