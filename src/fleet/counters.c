/*
 * counters.c - per-node counter flushes and the leader's fleet-wide merge
 * (counters.h, docs/fleet.md "Fleet-wide judging").
 */
#include "fleet/counters.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "core/err.h"
#include "core/log.h"
#include "core/loop.h"
#include "store/store_pg.h"

#define RECONNECT_MS 2000 /* a lost connection is retried at most this often */
#define ID_MAX       200

static const char schema_sql[] = "CREATE TABLE IF NOT EXISTS fleet_counters ("
                                 "  node_id TEXT COLLATE \"C\" NOT NULL,"
                                 "  service TEXT COLLATE \"C\" NOT NULL,"
                                 "  version TEXT COLLATE \"C\" NOT NULL,"
                                 "  cohort INTEGER NOT NULL,"
                                 "  start_id BIGINT NOT NULL,"
                                 "  data TEXT NOT NULL,"
                                 "  ts TIMESTAMPTZ NOT NULL DEFAULT now(),"
                                 "  PRIMARY KEY (node_id, service, version, cohort));"
                                 "CREATE TABLE IF NOT EXISTS fleet_flushes ("
                                 "  node_id TEXT COLLATE \"C\" PRIMARY KEY,"
                                 "  start_id BIGINT NOT NULL,"
                                 "  flushed_at TIMESTAMPTZ NOT NULL)";

struct fc_total { /* one fleet-wide series */
	char *service, *version;
	enum cohort cohort;
	struct metrics_cohort_snapshot sum;
};

struct fc_entry { /* one node's last row of one series */
	char *node;
	size_t total; /* index into totals */
	uint64_t start_id;
	struct metrics_cohort_snapshot last;
};

struct fc_node {
	char *id;
	int alive;
	int64_t flushed; /* wall ms; INT64_MIN: never */
};

struct fleet_counters {
	struct loop *loop;
	struct metrics_registry *reg;
	struct loop_timer timer;
	int armed;
	char *url;
	char node[ID_MAX + 1];
	char start_id[24]; /* decimal, for the queries */
	uint64_t start;
	int64_t flush_ms, lease_ms;
	int (*is_leader)(void *arg);
	void *arg;
	PGconn *pg;
	uint64_t next_try; /* clock_mono_ms(): no reconnect before */

	uint64_t *sent; /* [series * COHORT_COUNT]: requests last flushed */
	size_t nsent;

	struct fc_total *totals;
	size_t ntotals, captotals;
	struct fc_entry *entries;
	size_t nentries, capentries;
	struct fc_node *nodes;
	size_t nnodes, capnodes;
	uint64_t dropped;
};

/* --- pure parts ------------------------------------------------------------------- */

static int grow(void **arr, size_t *cap, size_t n, size_t elem, size_t max)
{
	size_t nc;
	void *p;

	if (n < *cap)
		return 0;
	if (n >= max)
		return -ENOSPC;
	nc = *cap ? *cap * 2 : 16;
	if (nc > max)
		nc = max;
	p = realloc(*arr, nc * elem);
	if (!p)
		return -ENOMEM;
	*arr = p;
	*cap = nc;
	return 0;
}

static uint64_t sub0(uint64_t a, uint64_t b)
{
	return a > b ? a - b : 0;
}

/* sum += cur - prev field-wise (saturating); prev NULL: sum += cur. */
static void snap_add(struct metrics_cohort_snapshot *sum,
                     const struct metrics_cohort_snapshot *prev,
                     const struct metrics_cohort_snapshot *cur)
{
	static const struct metrics_cohort_snapshot zero;

	if (!prev)
		prev = &zero;
	sum->requests += sub0(cur->requests, prev->requests);
	sum->errors += sub0(cur->errors, prev->errors);
	sum->proxy_errors += sub0(cur->proxy_errors, prev->proxy_errors);
	for (size_t i = 0; i < METRICS_CLASSES; i++)
		sum->by_class[i] += sub0(cur->by_class[i], prev->by_class[i]);
	for (size_t i = 0; i < METRICS_ERR_COUNT; i++)
		sum->upstream[i] += sub0(cur->upstream[i], prev->upstream[i]);
	for (size_t i = 0; i < HIST_BUCKETS; i++)
		sum->hist.counts[i] += sub0(cur->hist.counts[i], prev->hist.counts[i]);
	sum->hist.n += sub0(cur->hist.n, prev->hist.n);
	sum->hist.sum_us += sub0(cur->hist.sum_us, prev->hist.sum_us);
}

/* A counter that went backwards: the node restarted without a new start id. */
static int went_back(const struct metrics_cohort_snapshot *prev,
                     const struct metrics_cohort_snapshot *cur)
{
	if (cur->requests < prev->requests || cur->errors < prev->errors ||
	    cur->hist.n < prev->hist.n || cur->hist.sum_us < prev->hist.sum_us)
		return 1;
	for (size_t i = 0; i < HIST_BUCKETS; i++)
		if (cur->hist.counts[i] < prev->hist.counts[i])
			return 1;
	return 0;
}

static long find_total(const struct fleet_counters *fc, const char *service, const char *version,
                       enum cohort cohort)
{
	for (size_t i = 0; i < fc->ntotals; i++)
		if (fc->totals[i].cohort == cohort && !strcmp(fc->totals[i].service, service) &&
		    !strcmp(fc->totals[i].version, version))
			return (long)i;
	return -1;
}

int fleet_counters_ingest(struct fleet_counters *fc, const char *node, uint64_t start_id,
                          const char *service, const char *version, enum cohort cohort,
                          const struct metrics_cohort_snapshot *cur)
{
	long t;
	struct fc_entry *en = NULL;
	int rc;

	if (!fc || !node || !service || !version || (unsigned)cohort >= COHORT_COUNT || !cur)
		return -EINVAL;
	t = find_total(fc, service, version, cohort);
	if (t < 0) {
		struct fc_total *nt;

		rc = grow((void **)&fc->totals, &fc->captotals, fc->ntotals, sizeof(*fc->totals),
		          FLEET_COUNTERS_MAX_SERIES);
		if (rc)
			goto drop;
		nt = &fc->totals[fc->ntotals];
		memset(nt, 0, sizeof(*nt));
		nt->service = strdup(service);
		nt->version = strdup(version);
		nt->cohort = cohort;
		if (!nt->service || !nt->version) {
			free(nt->service);
			free(nt->version);
			rc = -ENOMEM;
			goto drop;
		}
		t = (long)fc->ntotals++;
	}
	for (size_t i = 0; i < fc->nentries; i++)
		if (fc->entries[i].total == (size_t)t && !strcmp(fc->entries[i].node, node)) {
			en = &fc->entries[i];
			break;
		}
	if (!en) {
		rc = grow((void **)&fc->entries, &fc->capentries, fc->nentries,
		          sizeof(*fc->entries), FLEET_COUNTERS_MAX_ENTRIES);
		if (rc)
			goto drop;
		en = &fc->entries[fc->nentries];
		memset(en, 0, sizeof(*en));
		en->node = strdup(node);
		if (!en->node) {
			rc = -ENOMEM;
			goto drop;
		}
		fc->nentries++;
		en->total = (size_t)t;
		snap_add(&fc->totals[t].sum, NULL, cur); /* first sight: counts whole */
	} else if (en->start_id != start_id || went_back(&en->last, cur)) {
		snap_add(&fc->totals[t].sum, NULL, cur); /* a restart: the new value is the delta */
	} else {
		snap_add(&fc->totals[t].sum, &en->last, cur);
	}
	en->start_id = start_id;
	en->last = *cur;
	return 0;
drop:
	fc->dropped++;
	return rc;
}

int fleet_counters_note_node(struct fleet_counters *fc, const char *node, int alive,
                             int64_t flushed_wall_ms)
{
	struct fc_node *n;
	int rc;

	if (!fc || !node)
		return -EINVAL;
	rc = grow((void **)&fc->nodes, &fc->capnodes, fc->nnodes, sizeof(*fc->nodes),
	          FLEET_COUNTERS_MAX_NODES);
	if (rc)
		return rc;
	n = &fc->nodes[fc->nnodes];
	n->id = strdup(node);
	if (!n->id)
		return -ENOMEM;
	n->alive = alive;
	n->flushed = flushed_wall_ms;
	fc->nnodes++;
	return 0;
}

void fleet_counters_clear_nodes(struct fleet_counters *fc)
{
	for (size_t i = 0; fc && i < fc->nnodes; i++)
		free(fc->nodes[i].id);
	if (fc)
		fc->nnodes = 0;
}

int fleet_counters_read(const struct fleet_counters *fc, const char *service, const char *version,
                        enum cohort cohort, struct metrics_cohort_snapshot *out)
{
	long t;

	if (!fc || !service || !version || (unsigned)cohort >= COHORT_COUNT || !out)
		return -EINVAL;
	t = find_total(fc, service, version, cohort);
	if (t < 0)
		memset(out, 0, sizeof(*out));
	else
		*out = fc->totals[t].sum;
	return 0;
}

uint64_t fleet_counters_start_id(const struct fleet_counters *fc)
{
	return fc->start;
}

int fleet_counters_read_degraded(const struct fleet_counters *fc, const char *service,
                                 const char *version, enum cohort cohort,
                                 const struct metrics_cohort_snapshot *local,
                                 struct metrics_cohort_snapshot *out)
{
	const struct fc_entry *mine = NULL;
	long t;
	int rc = fleet_counters_read(fc, service, version, cohort, out);

	if (rc || !local)
		return rc ? rc : -EINVAL;
	t = find_total(fc, service, version, cohort);
	for (size_t i = 0; t >= 0 && i < fc->nentries; i++)
		if (fc->entries[i].total == (size_t)t && !strcmp(fc->entries[i].node, fc->node)) {
			mine = &fc->entries[i];
			break;
		}
	/* this process's own traffic since the merge last saw it (all of it if never) */
	if (mine && mine->start_id == fc->start && !went_back(&mine->last, local))
		snap_add(out, &mine->last, local);
	else
		snap_add(out, NULL, local);
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

json_t *fleet_counters_missing(const struct fleet_counters *fc, int64_t since_ms)
{
	const char *ids[FLEET_COUNTERS_MAX_NODES];
	size_t n = 0;
	json_t *arr = json_array();

	if (!arr)
		return NULL;
	for (size_t i = 0; fc && i < fc->nnodes; i++)
		if (fc->nodes[i].alive && fc->nodes[i].flushed < since_ms)
			ids[n++] = fc->nodes[i].id;
	qsort(ids, n, sizeof(ids[0]), cmp_str);
	for (size_t i = 0; i < n; i++)
		if (json_array_append_new(arr, json_string(ids[i]))) {
			json_decref(arr);
			return NULL;
		}
	return arr;
}

uint64_t fleet_counters_dropped(const struct fleet_counters *fc)
{
	return fc ? fc->dropped : 0;
}

/* Appends "fmt" to out at *off; -ENOBUFS when it does not fit. */
static int put_u64(char *out, size_t len, size_t *off, const char *sep, uint64_t v)
{
	int k = snprintf(out + *off, len - *off, "%s%" PRIu64, sep, v);

	if (k < 0 || (size_t)k >= len - *off)
		return -ENOBUFS;
	*off += (size_t)k;
	return 0;
}

int fleet_counters_encode(const struct metrics_cohort_snapshot *s, char *out, size_t len)
{
	size_t off = 0;
	int rc = 0;

	if (!s || !out || !len)
		return -ENOBUFS;
	out[0] = '\0';
	rc |= put_u64(out, len, &off, "", s->requests);
	rc |= put_u64(out, len, &off, " ", s->errors);
	rc |= put_u64(out, len, &off, " ", s->proxy_errors);
	for (size_t i = 0; i < METRICS_CLASSES; i++)
		rc |= put_u64(out, len, &off, " ", s->by_class[i]);
	for (size_t i = 0; i < METRICS_ERR_COUNT; i++)
		rc |= put_u64(out, len, &off, " ", s->upstream[i]);
	rc |= put_u64(out, len, &off, " ", s->hist.n);
	rc |= put_u64(out, len, &off, " ", s->hist.sum_us);
	for (size_t i = 0; i < HIST_BUCKETS && !rc; i++) {
		if (!s->hist.counts[i])
			continue;
		rc |= put_u64(out, len, &off, " ", i);
		rc |= put_u64(out, len, &off, ":", s->hist.counts[i]);
	}
	return rc ? -ENOBUFS : 0;
}

/* One decimal uint64 at *p followed by sep (or the end when sep is 0). */
static int get_u64(const char **p, char sep, uint64_t *v)
{
	char *end;

	if (**p < '0' || **p > '9')
		return -EINVAL;
	errno = 0;
	*v = strtoull(*p, &end, 10);
	if (errno || (sep ? *end != sep : (*end != ' ' && *end != '\0')))
		return -EINVAL;
	*p = *end ? end + 1 : end;
	return 0;
}

int fleet_counters_decode(const char *text, struct metrics_cohort_snapshot *out)
{
	const char *p = text;
	uint64_t sum = 0;
	int rc = 0;

	if (!text || !out)
		return -EINVAL;
	memset(out, 0, sizeof(*out));
	rc |= get_u64(&p, 0, &out->requests);
	rc |= rc ? 0 : get_u64(&p, 0, &out->errors);
	rc |= rc ? 0 : get_u64(&p, 0, &out->proxy_errors);
	for (size_t i = 0; i < METRICS_CLASSES && !rc; i++)
		rc |= get_u64(&p, 0, &out->by_class[i]);
	for (size_t i = 0; i < METRICS_ERR_COUNT && !rc; i++)
		rc |= get_u64(&p, 0, &out->upstream[i]);
	rc |= rc ? 0 : get_u64(&p, 0, &out->hist.n);
	rc |= rc ? 0 : get_u64(&p, 0, &out->hist.sum_us);
	while (!rc && *p) {
		uint64_t i, c;

		rc |= get_u64(&p, ':', &i);
		rc |= rc ? 0 : get_u64(&p, 0, &c);
		if (!rc && i >= HIST_BUCKETS)
			rc = -EINVAL;
		if (!rc) {
			out->hist.counts[i] = c;
			sum += c;
		}
	}
	if (!rc && sum != out->hist.n)
		rc = -EINVAL;
	if (rc)
		memset(out, 0, sizeof(*out));
	return rc ? -EINVAL : 0;
}

/* --- the database ---------------------------------------------------------------- */

static void conn_drop(struct fleet_counters *fc, const char *what)
{
	char m[256];

	snprintf(m, sizeof(m), "%s", fc->pg ? PQerrorMessage(fc->pg) : "not connected");
	m[strcspn(m, "\n")] = '\0';
	log_warn("fleet counters: query failed", "query", what, "error", m, NULL);
	if (fc->pg && PQstatus(fc->pg) != CONNECTION_OK) {
		PQfinish(fc->pg);
		fc->pg = NULL;
		fc->next_try = clock_mono_ms() + RECONNECT_MS;
	}
}

static int run_cmd(struct fleet_counters *fc, const char *sql, int n, const char *const *p,
                   const char *what)
{
	PGresult *res = PQexecParams(fc->pg, sql, n, NULL, p, NULL, NULL, 0);
	int ok = res && PQresultStatus(res) == PGRES_COMMAND_OK;

	PQclear(res);
	if (!ok) {
		conn_drop(fc, what);
		return ERR_UNAVAILABLE;
	}
	return 0;
}

static int conn_ensure(struct fleet_counters *fc, char *err, size_t errlen)
{
	char m[256], sql[160];
	PGresult *res;
	int ok;

	if (fc->pg && PQstatus(fc->pg) == CONNECTION_OK)
		return 0;
	if (fc->pg) {
		PQfinish(fc->pg);
		fc->pg = NULL;
	}
	if (!fc->url || clock_mono_ms() < fc->next_try)
		return ERR_UNAVAILABLE;
	fc->pg = (PGconn *)store_pg_connect(fc->url, m, sizeof(m));
	if (!fc->pg) {
		if (err)
			snprintf(err, errlen, "fleet counters: %s", m);
		fc->next_try = clock_mono_ms() + RECONNECT_MS;
		return ERR_UNAVAILABLE;
	}
	snprintf(sql, sizeof(sql), "SET statement_timeout = %" PRId64, fc->lease_ms);
	res = PQexec(fc->pg, sql);
	ok = res && PQresultStatus(res) == PGRES_COMMAND_OK;
	PQclear(res);
	if (ok) {
		/* the multi-statement schema runs as one implicit transaction */
		res = PQexec(fc->pg, schema_sql);
		ok = res && PQresultStatus(res) == PGRES_COMMAND_OK;
		if (!ok && err)
			snprintf(err, errlen, "fleet counters: schema: %s",
			         PQresultErrorMessage(res));
		PQclear(res);
	}
	if (!ok) {
		PQfinish(fc->pg);
		fc->pg = NULL;
		fc->next_try = clock_mono_ms() + RECONNECT_MS;
		return ERR_UNAVAILABLE;
	}
	return 0;
}

int fleet_counters_flush(struct fleet_counters *fc)
{
	char data[FLEET_COUNTERS_DATA_MAX], co[4];
	unsigned nseries;
	size_t want;
	uint64_t *pend = NULL;
	int rc;

	if (!fc)
		return -EINVAL;
	if (conn_ensure(fc, NULL, 0))
		return ERR_UNAVAILABLE;
	nseries = fc->reg ? metrics_series_count(fc->reg) : 0;
	if (nseries > FLEET_COUNTERS_MAX_SERIES)
		nseries = FLEET_COUNTERS_MAX_SERIES;
	want = (size_t)nseries * COHORT_COUNT;
	if (want > fc->nsent) {
		uint64_t *p = realloc(fc->sent, want * sizeof(*p));

		if (!p)
			return -ENOMEM;
		memset(p + fc->nsent, 0, (want - fc->nsent) * sizeof(*p));
		fc->sent = p;
		fc->nsent = want;
	}
	pend = want ? malloc(want * sizeof(*pend)) : NULL;
	if (want && !pend)
		return -ENOMEM;
	rc = run_cmd(fc, "BEGIN", 0, NULL, "begin");
	if (rc)
		goto out;
	for (unsigned s = 0; s < nseries; s++) {
		const char *svc, *ver;

		if (metrics_series_name(fc->reg, (int)s, &svc, &ver))
			continue;
		for (int c = 0; c < COHORT_COUNT; c++) {
			size_t k = (size_t)s * COHORT_COUNT + (size_t)c;
			struct metrics_cohort_snapshot snap;
			const char *p[6] = {fc->node, svc, ver, co, fc->start_id, data};

			pend[k] = fc->sent[k];
			if (metrics_read(fc->reg, (int)s, (enum cohort)c, &snap) ||
			    snap.requests == fc->sent[k] ||
			    fleet_counters_encode(&snap, data, sizeof(data)))
				continue;
			snprintf(co, sizeof(co), "%d", c);
			rc =
			    run_cmd(fc,
			            "INSERT INTO fleet_counters (node_id, service, version, cohort,"
			            " start_id, data, ts) VALUES ($1, $2, $3, $4::int, $5::bigint,"
			            " $6, now()) ON CONFLICT (node_id, service, version, cohort)"
			            " DO UPDATE SET start_id = excluded.start_id,"
			            " data = excluded.data, ts = excluded.ts",
			            6, p, "upsert counters");
			if (rc)
				goto out;
			pend[k] = snap.requests;
		}
	}
	{
		const char *p[2] = {fc->node, fc->start_id};

		rc = run_cmd(fc,
		             "INSERT INTO fleet_flushes (node_id, start_id, flushed_at)"
		             " VALUES ($1, $2::bigint, now()) ON CONFLICT (node_id) DO UPDATE"
		             " SET start_id = excluded.start_id, flushed_at = excluded.flushed_at",
		             2, p, "upsert flush");
	}
	if (!rc)
		rc = run_cmd(fc, "COMMIT", 0, NULL, "commit");
	if (!rc && want)
		memcpy(fc->sent, pend, want * sizeof(*pend));
out:
	if (rc && fc->pg && PQtransactionStatus(fc->pg) != PQTRANS_IDLE) {
		PGresult *res = PQexec(fc->pg, "ROLLBACK");

		PQclear(res);
	}
	free(pend);
	return rc;
}

static int parse_i64(const char *s, int64_t *v)
{
	char *end;

	errno = 0;
	*v = strtoll(s, &end, 10);
	return errno || end == s || *end ? -EINVAL : 0;
}

int fleet_counters_merge(struct fleet_counters *fc)
{
	PGresult *res;
	int64_t now;

	if (!fc)
		return -EINVAL;
	if (conn_ensure(fc, NULL, 0))
		return ERR_UNAVAILABLE;
	/* the registry first: a flush seen here has its rows visible to the next read */
	res =
	    PQexec(fc->pg, "SELECT n.id, (extract(epoch FROM now() - n.last_seen) * 1000)::bigint,"
	                   " (extract(epoch FROM now() - f.flushed_at) * 1000)::bigint"
	                   " FROM fleet_nodes n LEFT JOIN fleet_flushes f ON f.node_id = n.id");
	now = (int64_t)clock_wall_ms();
	if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
		PQclear(res);
		conn_drop(fc, "node registry");
		return ERR_UNAVAILABLE;
	}
	fleet_counters_clear_nodes(fc);
	for (int i = 0; i < PQntuples(res); i++) {
		int64_t seen, flushed = INT64_MIN, age;

		if (parse_i64(PQgetvalue(res, i, 1), &seen))
			continue;
		if (!PQgetisnull(res, i, 2) && !parse_i64(PQgetvalue(res, i, 2), &age))
			flushed = now - age;
		fleet_counters_note_node(fc, PQgetvalue(res, i, 0), seen <= fc->lease_ms, flushed);
	}
	PQclear(res);
	res = PQexec(
	    fc->pg, "SELECT node_id, start_id, service, version, cohort, data FROM fleet_counters");
	if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
		PQclear(res);
		conn_drop(fc, "counters");
		return ERR_UNAVAILABLE;
	}
	for (int i = 0; i < PQntuples(res); i++) {
		struct metrics_cohort_snapshot snap;
		int64_t start, cohort;

		if (parse_i64(PQgetvalue(res, i, 1), &start) ||
		    parse_i64(PQgetvalue(res, i, 4), &cohort) || cohort < 0 ||
		    cohort >= COHORT_COUNT || fleet_counters_decode(PQgetvalue(res, i, 5), &snap)) {
			fc->dropped++;
			continue;
		}
		fleet_counters_ingest(fc, PQgetvalue(res, i, 0), (uint64_t)start,
		                      PQgetvalue(res, i, 2), PQgetvalue(res, i, 3),
		                      (enum cohort)cohort, &snap);
	}
	PQclear(res);
	return 0;
}

/* --- lifecycle ------------------------------------------------------------------- */

static void on_timer(struct loop *loop, struct loop_timer *t)
{
	struct fleet_counters *fc = t->data;

	fleet_counters_flush(fc);
	if (fc->is_leader && fc->is_leader(fc->arg))
		fleet_counters_merge(fc);
	loop_timer_start(loop, t, (uint64_t)fc->flush_ms);
}

static uint64_t random_start_id(void)
{
	uint64_t v = 0;
	FILE *f = fopen("/dev/urandom", "rb");

	if (f) {
		if (fread(&v, sizeof(v), 1, f) != 1)
			v = 0;
		fclose(f);
	}
	v ^= clock_mono_ms() * UINT64_C(0x9E3779B97F4A7C15) ^ ((uint64_t)getpid() << 32);
	return v & INT64_MAX; /* a non-negative BIGINT */
}

struct fleet_counters *fleet_counters_new(struct loop *loop, struct metrics_registry *reg,
                                          const struct fleet_counters_config *cfg, char *err,
                                          size_t errlen)
{
	struct fleet_counters *fc;

	if (!cfg || !cfg->node_id || !*cfg->node_id || strlen(cfg->node_id) > ID_MAX) {
		snprintf(err, errlen, "fleet counters: a node id of 1..%d bytes is required",
		         ID_MAX);
		return NULL;
	}
	fc = calloc(1, sizeof(*fc));
	if (!fc)
		goto nomem;
	fc->loop = loop;
	fc->reg = reg;
	snprintf(fc->node, sizeof(fc->node), "%s", cfg->node_id);
	fc->flush_ms = cfg->flush_ms ? cfg->flush_ms : FLEET_COUNTERS_FLUSH_MS;
	if (fc->flush_ms < 50)
		fc->flush_ms = 50;
	fc->lease_ms = cfg->lease_ms > 0 ? cfg->lease_ms : 3000;
	fc->is_leader = cfg->is_leader;
	fc->arg = cfg->arg;
	fc->start = random_start_id();
	snprintf(fc->start_id, sizeof(fc->start_id), "%" PRIu64, fc->start);
	if (cfg->url) {
		fc->url = strdup(cfg->url);
		if (!fc->url)
			goto nomem;
		if (conn_ensure(fc, err, errlen))
			goto fail;
	}
	if (loop) {
		loop_timer_init(&fc->timer, on_timer, fc);
		loop_timer_start(loop, &fc->timer, 0);
		fc->armed = 1;
	}
	return fc;
nomem:
	snprintf(err, errlen, "fleet counters: out of memory");
fail:
	fleet_counters_free(fc);
	return NULL;
}

void fleet_counters_free(struct fleet_counters *fc)
{
	if (!fc)
		return;
	if (fc->armed)
		loop_timer_stop(fc->loop, &fc->timer);
	if (fc->pg)
		PQfinish(fc->pg);
	fleet_counters_clear_nodes(fc);
	for (size_t i = 0; i < fc->ntotals; i++) {
		free(fc->totals[i].service);
		free(fc->totals[i].version);
	}
	for (size_t i = 0; i < fc->nentries; i++)
		free(fc->entries[i].node);
	free(fc->totals);
	free(fc->entries);
	free(fc->nodes);
	free(fc->sent);
	free(fc->url);
	free(fc);
}
