/*
 * node-agent.c - a hypervisor-node agent using libcanary: it asks whether
 * the DWCP v3 HDE path is on for this node (flag dwcp_v3_hde, with the node
 * id as targeting key and as the nodeId attribute the flag is sticky on) and
 * prints the answer whenever the ruleset changes.  Evaluation is local: the
 * agent keeps answering while canaryd is away, and says it is stale.
 *
 *   node-agent --url http://127.0.0.1:8081 --token "$READ_TOKEN" --node node-123
 *
 * Options (each also from the environment):
 *   --url URL        canaryd's admin listener     CANARY_URL   (http://127.0.0.1:8081)
 *   --token TOKEN    a token with scope read      CANARY_TOKEN
 *   --node ID        this node's id               NODE_ID      (the host name)
 *   --flag KEY       the flag to ask for          (dwcp_v3_hde)
 *   --cache PATH     last-known ruleset file      CANARY_CACHE
 *   --status-ms N    print the status every N ms  (0: never)
 *   --backoff-max N  longest reconnect delay, ms  (30000)
 *
 * Output, one line per event, key=value, flushed at once:
 *   change kind=flag|ruleset key=K revision=N from_cache=0|1 t_us=UNIX_US enabled=true|false variant=V reason=R
 *   status connected=0|1 ready=0|1 revision=N stale_since_ms=MS enabled=true|false variant=V reason=R error="..."
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <canary/canary.h>

struct agent {
	struct canary_client *client;
	const char *flag;
	struct canary_context ctx;
	struct canary_attr attrs[1];
};

static volatile sig_atomic_t quit;

static void on_signal(int sig)
{
	(void)sig;
	quit = 1;
}

static long long wall_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The answer for this node, as "enabled=... variant=... reason=..." into buf. */
static void answer(struct agent *a, char *buf, size_t len)
{
	struct canary_result r;
	int on = canary_eval_bool(a->client, a->flag, &a->ctx, 0, &r);
	const char *err = canary_error_name(r.error);

	snprintf(buf, len, "enabled=%s variant=%s reason=%s%s%s", on ? "true" : "false",
	         r.variant[0] ? r.variant : "-", canary_reason_name(r.reason), err ? " error=" : "",
	         err ? err : "");
}

/* Runs on libcanary's stream thread, after the change is in effect. */
static void on_change(void *user, const struct canary_change *ch)
{
	struct agent *a = user;
	char ans[256];

	answer(a, ans, sizeof(ans));
	printf("change kind=%s key=%s revision=%llu from_cache=%d t_us=%lld %s\n",
	       ch->kind == CANARY_CHANGE_FLAG ? "flag" : "ruleset", ch->key ? ch->key : "-",
	       (unsigned long long)ch->revision, ch->from_cache, wall_us(), ans);
	fflush(stdout);
}

static void print_status(struct agent *a)
{
	struct canary_status st;
	char ans[256];

	canary_client_status(a->client, &st);
	answer(a, ans, sizeof(ans));
	printf("status connected=%d ready=%d revision=%llu stale_since_ms=%lld connects=%llu %s "
	       "last_error=\"%s\"\n",
	       st.connected, st.ready, (unsigned long long)st.revision,
	       (long long)st.stale_since_ms, (unsigned long long)st.connects, ans, st.last_error);
	fflush(stdout);
}

static int parse_uint(const char *s, unsigned *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || v > 86400000ul)
		return -1;
	*out = (unsigned)v;
	return 0;
}

static void usage(const char *argv0)
{
	fprintf(stderr,
	        "usage: %s [--url URL] [--token TOKEN] [--node ID] [--flag KEY] [--cache PATH]\n"
	        "          [--status-ms N] [--backoff-max MS]\n",
	        argv0);
}

int main(int argc, char **argv)
{
	struct canary_options o = {0};
	struct agent a = {0};
	static char host[256];
	const char *node = getenv("NODE_ID");
	unsigned status_ms = 0, elapsed = 0;
	struct sigaction sa;
	int rc;

	o.base_url = getenv("CANARY_URL") ? getenv("CANARY_URL") : "http://127.0.0.1:8081";
	o.token = getenv("CANARY_TOKEN");
	o.cache_path = getenv("CANARY_CACHE");
	a.flag = "dwcp_v3_hde";
	for (int i = 1; i < argc; i++) {
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!v) {
			usage(argv[0]);
			return 2;
		}
		if (strcmp(argv[i], "--url") == 0)
			o.base_url = v;
		else if (strcmp(argv[i], "--token") == 0)
			o.token = v;
		else if (strcmp(argv[i], "--node") == 0)
			node = v;
		else if (strcmp(argv[i], "--flag") == 0)
			a.flag = v;
		else if (strcmp(argv[i], "--cache") == 0)
			o.cache_path = v;
		else if (strcmp(argv[i], "--status-ms") == 0 && parse_uint(v, &status_ms) == 0)
			;
		else if (strcmp(argv[i], "--backoff-max") == 0 &&
		         parse_uint(v, &o.backoff_max_ms) == 0)
			;
		else {
			usage(argv[0]);
			return 2;
		}
		i++;
	}
	if (!node) {
		if (gethostname(host, sizeof(host) - 1) != 0) {
			fprintf(stderr, "node-agent: no --node and no host name: %s\n",
			        strerror(errno));
			return 2;
		}
		node = host;
	}
	a.attrs[0] = (struct canary_attr){"nodeId", node};
	a.ctx = (struct canary_context){.targeting_key = node, .attrs = a.attrs, .nattrs = 1};
	o.on_change = on_change;
	o.user = &a;
	if (o.backoff_max_ms && o.backoff_max_ms < 100)
		o.backoff_min_ms = o.backoff_max_ms;

	a.client = canary_client_new(&o);
	if (!a.client) {
		fprintf(stderr, "node-agent: %s: %s\n", o.base_url, strerror(errno));
		return 1;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	rc = canary_client_start(a.client);
	if (rc != 0) {
		fprintf(stderr, "node-agent: cannot start: %s\n", strerror(-rc));
		canary_client_free(a.client);
		return 1;
	}
	printf("agent node=%s flag=%s url=%s\n", node, a.flag, o.base_url);
	fflush(stdout);
	while (!quit) {
		struct timespec ts = {0, 10 * 1000000L};

		nanosleep(&ts, NULL);
		elapsed += 10;
		if (status_ms && elapsed >= status_ms) {
			elapsed = 0;
			print_status(&a);
		}
	}
	canary_client_free(a.client);
	return 0;
}
