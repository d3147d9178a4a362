/*
 * client.c - libcanary's client handle and its stream thread (canary.h,
 * docs/client.md).
 *
 * The stream thread runs one libcurl easy transfer at a time on the client's
 * multi handle: GET BASE/v1/feature-flags/stream with the bearer token and,
 * when it has a ruleset, Last-Event-ID = that ruleset's revision.  Bytes go
 * through the SSE parser (sse.c); a `ruleset` event replaces the whole state,
 * a `change` event replaces one flag (ruleset.c), and each new state is
 * compiled into a flagset and published as an immutable snapshot that
 * evaluating threads pick up without locks (eval.c).  A change that cannot
 * be applied ends the connection and the next one asks for a full ruleset.
 * When the transfer ends, the thread waits (exponential backoff with jitter,
 * interruptible by stop) and reconnects.  The multi handle is used only for
 * curl_multi_poll / curl_multi_wakeup, which make the waits interruptible.
 */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "internal.h"

#define STREAM_PATH        "/v1/feature-flags/stream"
#define DEF_BACKOFF_MIN_MS 100
#define DEF_BACKOFF_MAX_MS 30000
#define DEF_CONNECT_MS     5000
#define DEF_IDLE_MS        45000
#define DEF_EVENT_MAX      (8u << 20)
#define POLL_MS            1000 /* longest sleep between idle checks */
#define ERRBODY_MAX        200  /* bytes of a non-200 answer kept for last_error */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static int curl_init_rc;
static atomic_uint_fast64_t next_id = 1;

static void curl_init(void)
{
	curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : -1;
}

static int64_t now_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t now_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void set_error(struct canary_client *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void set_error(struct canary_client *c, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&c->lock);
	va_start(ap, fmt);
	vsnprintf(c->st.last_error, sizeof(c->st.last_error), fmt, ap);
	va_end(ap);
	pthread_mutex_unlock(&c->lock);
}

/* ------------------------------------------------------------------------ */
/* Publishing                                                                 */

static void csnap_destroy(struct snap_obj *o)
{
	struct csnap *s = (struct csnap *)o;

	flagset_free(s->set);
	free(s);
}

int client_publish(struct canary_client *c, struct flagset *set, uint64_t rev)
{
	struct csnap *s;

	if (!set)
		return -EINVAL;
	s = calloc(1, sizeof(*s));
	if (!s) {
		flagset_free(set);
		return -ENOMEM;
	}
	snap_obj_init(&s->obj, csnap_destroy);
	s->set = set;
	s->revision = rev;
	snapshot_publish(&c->snap, &s->obj);
	pthread_mutex_lock(&c->lock);
	c->st.ready = 1;
	c->st.revision = rev;
	pthread_mutex_unlock(&c->lock);
	return 0;
}

/* ------------------------------------------------------------------------ */
/* The cache file                                                             */

/* Writes the current ruleset to cache_path atomically (tmp file, fsync, rename). */
static void cache_write(struct canary_client *c)
{
	char tmp[4096];
	char *text;
	size_t len, off = 0;
	int fd;

	if (!c->cache_path)
		return;
	text = ruleset_render(&c->rs);
	if (!text) {
		set_error(c, "cache %s: out of memory", c->cache_path);
		return;
	}
	len = strlen(text);
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", c->cache_path, (long)getpid()) >=
	    sizeof(tmp)) {
		set_error(c, "cache %s: path too long", c->cache_path);
		goto out_free;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd == -1) {
		set_error(c, "cache %s: %s", tmp, strerror(errno));
		goto out_free;
	}
	while (off < len) {
		ssize_t n = write(fd, text + off, len - off);

		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			set_error(c, "cache %s: %s", tmp, strerror(errno));
			goto out_unlink;
		}
		off += (size_t)n;
	}
	if (fsync(fd) == -1) {
		set_error(c, "cache %s: fsync: %s", tmp, strerror(errno));
		goto out_unlink;
	}
	close(fd);
	fd = -1;
	if (rename(tmp, c->cache_path) == -1) {
		set_error(c, "cache %s: rename: %s", c->cache_path, strerror(errno));
		goto out_unlink;
	}
	goto out_free;
out_unlink:
	if (fd != -1)
		close(fd);
	unlink(tmp);
out_free:
	free(text);
}

/* Loads cache_path, if there is one, as the ruleset to evaluate until the stream answers. */
static void cache_load(struct canary_client *c)
{
	char err[512];
	struct flagset *set;
	struct stat sb;
	char *text = NULL;
	size_t off = 0;
	FILE *f;

	if (!c->cache_path)
		return;
	f = fopen(c->cache_path, "rbe");
	if (!f) {
		if (errno != ENOENT)
			set_error(c, "cache %s: %s", c->cache_path, strerror(errno));
		return;
	}
	if (fstat(fileno(f), &sb) == -1 || sb.st_size < 0 ||
	    (uint64_t)sb.st_size > c->max_event_bytes) {
		set_error(c, "cache %s: unreadable or over %zu bytes", c->cache_path,
		          c->max_event_bytes);
		goto out_close;
	}
	text = malloc((size_t)sb.st_size + 1);
	if (!text) {
		set_error(c, "cache %s: out of memory", c->cache_path);
		goto out_close;
	}
	while (off < (size_t)sb.st_size) {
		size_t n = fread(text + off, 1, (size_t)sb.st_size - off, f);

		if (n == 0)
			break;
		off += n;
	}
	if (ruleset_parse(&c->rs, text, off, &set, err, sizeof(err)) != 0) {
		set_error(c, "cache %s: %s", c->cache_path, err);
		goto out_close;
	}
	if (client_publish(c, set, c->rs.revision) != 0) {
		ruleset_release(&c->rs);
		set_error(c, "cache %s: out of memory", c->cache_path);
		goto out_close;
	}
	c->cache_unannounced = 1;
out_close:
	free(text);
	fclose(f);
}

/* ------------------------------------------------------------------------ */
/* Events                                                                     */

static void announce(struct canary_client *c, enum canary_change_kind kind, const char *key,
                     int deleted, int from_cache)
{
	struct canary_change ch = {kind, c->rs.revision, key, deleted, from_cache};

	if (c->on_change)
		c->on_change(c->user, &ch);
}

/* One SSE event.  Non-zero ends the connection (a change that cannot apply). */
static int on_event(void *user, const struct sse_event *ev)
{
	struct canary_client *c = user;
	char err[512];
	struct flagset *set;

	if (strcmp(ev->event, "ruleset") == 0) {
		struct ruleset rs;

		if (ruleset_parse(&rs, ev->data, ev->len, &set, err, sizeof(err)) != 0) {
			/* the last good ruleset stays; refetching would get the same one */
			set_error(c, "ruleset %s rejected: %s", ev->id, err);
			return 0;
		}
		ruleset_release(&c->rs);
		c->rs = rs;
		if (client_publish(c, set, rs.revision) != 0) {
			set_error(c, "ruleset %s: out of memory", ev->id);
			c->no_resume = 1;
			return 1;
		}
		cache_write(c);
		announce(c, CANARY_CHANGE_RULESET, NULL, 0, 0);
		return 0;
	}
	if (strcmp(ev->event, "change") == 0) {
		char *key = NULL;
		int deleted = 0;

		if (ruleset_apply_change(&c->rs, ev->data, ev->len, &set, &key, &deleted, err,
		                         sizeof(err)) != 0 ||
		    client_publish(c, set, c->rs.revision) != 0) {
			set_error(c, "change %s not applied (%s): fetching the full ruleset",
			          ev->id, err);
			pthread_mutex_lock(&c->lock);
			c->st.refetches++;
			pthread_mutex_unlock(&c->lock);
			free(key);
			c->no_resume = 1;
			return 1;
		}
		cache_write(c);
		announce(c, CANARY_CHANGE_FLAG, key, deleted, 0);
		free(key);
	}
	return 0; /* other events are not ours */
}

/* ------------------------------------------------------------------------ */
/* The connection                                                             */

struct conn {
	struct canary_client *c;
	CURL *easy;
	long status;
	int ok; /* answered 200 with an event stream */
	int overflow;
	int64_t last_rx;
	char body[ERRBODY_MAX + 1];
	size_t body_len;
	char curl_err[CURL_ERROR_SIZE];
};

static size_t on_header(char *p, size_t size, size_t n, void *user)
{
	struct conn *k = user;
	struct canary_client *c = k->c;
	size_t len = size * n;
	char *ct = NULL;

	k->last_rx = now_mono_ms();
	if (!(len == 2 && p[0] == '\r' && p[1] == '\n') && !(len == 1 && p[0] == '\n'))
		return len;
	/* the end of a header block: is this the stream? */
	curl_easy_getinfo(k->easy, CURLINFO_RESPONSE_CODE, &k->status);
	curl_easy_getinfo(k->easy, CURLINFO_CONTENT_TYPE, &ct);
	if (k->status != 200 || !ct || strncmp(ct, "text/event-stream", 17) != 0)
		return len;
	k->ok = 1;
	sse_reset(&c->sse);
	pthread_mutex_lock(&c->lock);
	c->st.connected = 1;
	c->st.stale_since_ms = 0;
	c->st.connects++;
	pthread_mutex_unlock(&c->lock);
	return len;
}

static size_t on_body(char *p, size_t size, size_t n, void *user)
{
	struct conn *k = user;
	size_t len = size * n;
	int rc;

	k->last_rx = now_mono_ms();
	if (!k->ok) {
		size_t room = ERRBODY_MAX - k->body_len;

		if (room > len)
			room = len;
		memcpy(k->body + k->body_len, p, room);
		k->body_len += room;
		k->body[k->body_len] = '\0';
		return len;
	}
	rc = sse_feed(&k->c->sse, p, len);
	if (rc == -ENOBUFS || rc == -ENOMEM)
		k->overflow = rc;
	return rc == 0 ? len : 0;
}

/* Trims trailing blanks of a server's error body, for a one-line message. */
static void trim(char *s, size_t *len)
{
	for (size_t i = 0; i < *len; i++)
		if (s[i] == '\n' || s[i] == '\r')
			s[i] = ' ';
	while (*len && s[*len - 1] == ' ')
		s[--*len] = '\0';
}

/*
 * One connection, from connect to its end (server gone, error, idle
 * timeout, a change that needs a full ruleset, or stop).  Returns 1 when the
 * stream had been established (answered 200), else 0.
 */
static int stream_once(struct canary_client *c, CURL *easy)
{
	struct conn k;
	struct curl_slist *hdrs = NULL;
	CURLM *multi = c->multi;
	CURLcode result = CURLE_OK;
	int done = 0, idle = 0, running = 0;
	char h[64];

	memset(&k, 0, sizeof(k));
	k.c = c;
	k.easy = easy;
	k.last_rx = now_mono_ms();
	curl_easy_reset(easy);
	hdrs = curl_slist_append(hdrs, "Accept: text/event-stream");
	if (hdrs && c->auth_header)
		hdrs = curl_slist_append(hdrs, c->auth_header);
	pthread_mutex_lock(&c->lock);
	if (c->st.ready && !c->no_resume) {
		snprintf(h, sizeof(h), "Last-Event-ID: %llu", (unsigned long long)c->rs.revision);
		if (hdrs)
			hdrs = curl_slist_append(hdrs, h);
	}
	pthread_mutex_unlock(&c->lock);
	c->no_resume = 0;
	if (!hdrs) {
		set_error(c, "out of memory");
		return 0;
	}
	curl_easy_setopt(easy, CURLOPT_URL, c->stream_url);
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, (long)c->connect_timeout_ms);
	curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(easy, CURLOPT_HEADERDATA, &k);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, &k);
	curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, k.curl_err);
	curl_easy_setopt(easy, CURLOPT_USERAGENT, "libcanary/" CANARY_VERSION);
	curl_multi_add_handle(multi, easy);
	while (!done && !atomic_load(&c->stopping)) {
		CURLMsg *m;
		int left;

		curl_multi_perform(multi, &running);
		while ((m = curl_multi_info_read(multi, &left)) != NULL) {
			if (m->msg == CURLMSG_DONE && m->easy_handle == easy) {
				result = m->data.result;
				done = 1;
			}
		}
		if (done || atomic_load(&c->stopping))
			break;
		if (now_mono_ms() - k.last_rx > (int64_t)c->idle_timeout_ms) {
			idle = 1;
			break;
		}
		curl_multi_poll(multi, NULL, 0, POLL_MS, NULL);
	}
	curl_multi_remove_handle(multi, easy);
	curl_slist_free_all(hdrs);

	pthread_mutex_lock(&c->lock);
	if (c->st.connected || c->st.stale_since_ms == 0)
		c->st.stale_since_ms = now_wall_ms();
	c->st.connected = 0;
	pthread_mutex_unlock(&c->lock);
	if (atomic_load(&c->stopping))
		return k.ok;
	if (idle)
		set_error(c, "%s: no data for %u ms (heartbeats missing): reconnecting",
		          c->stream_url, c->idle_timeout_ms);
	else if (k.overflow == -ENOBUFS)
		set_error(c, "%s: an event or line over %zu bytes: reconnecting", c->stream_url,
		          c->max_event_bytes);
	else if (k.overflow)
		set_error(c, "%s: out of memory", c->stream_url);
	else if (c->no_resume)
		; /* on_event said why */
	else if (!k.ok && k.status) {
		trim(k.body, &k.body_len);
		set_error(c, "%s: HTTP %ld, not an event stream%s%s", c->stream_url, k.status,
		          k.body_len ? ": " : "", k.body);
	} else if (result != CURLE_OK)
		set_error(c, "%s: %s", c->stream_url,
		          k.curl_err[0] ? k.curl_err : curl_easy_strerror(result));
	else
		set_error(c, "%s: stream closed by the server", c->stream_url);
	return k.ok;
}

/* Sleeps ms, or less when stop is called. */
static void pause_ms(struct canary_client *c, unsigned ms)
{
	int64_t end = now_mono_ms() + ms;

	while (!atomic_load(&c->stopping)) {
		int64_t left = end - now_mono_ms();

		if (left <= 0)
			break;
		curl_multi_poll(c->multi, NULL, 0, (int)(left < POLL_MS ? left : POLL_MS), NULL);
	}
}

/* The delay before reconnect attempt n (0-based): min * 2^n capped at max, "equal jitter". */
static unsigned backoff(struct canary_client *c, unsigned n)
{
	uint64_t d = c->backoff_min_ms, x;

	while (n-- && d < c->backoff_max_ms)
		d *= 2;
	if (d > c->backoff_max_ms)
		d = c->backoff_max_ms;
	/* xorshift64: jitter spreads a fleet's reconnects after a server restart */
	x = c->rng;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	c->rng = x;
	return (unsigned)(d / 2 + x % (d / 2 + 1));
}

static void *stream_main(void *arg)
{
	struct canary_client *c = arg;
	CURL *easy = curl_easy_init();
	unsigned attempt = 0;

	if (!easy) {
		set_error(c, "curl_easy_init failed");
		return NULL;
	}
	if (c->cache_unannounced) {
		c->cache_unannounced = 0;
		announce(c, CANARY_CHANGE_RULESET, NULL, 0, 1);
	}
	while (!atomic_load(&c->stopping)) {
		if (stream_once(c, easy))
			attempt = 0;
		if (atomic_load(&c->stopping))
			break;
		if (c->no_resume && attempt == 0) {
			attempt = 1; /* refetch at once, but not twice in a row */
			continue;
		}
		pause_ms(c, backoff(c, attempt));
		if (attempt < 32)
			attempt++;
	}
	curl_easy_cleanup(easy);
	return NULL;
}

/* ------------------------------------------------------------------------ */
/* Lifecycle                                                                  */

static char *cat2(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	char *s = malloc(la + lb + 1);

	if (s) {
		memcpy(s, a, la);
		memcpy(s + la, b, lb + 1);
	}
	return s;
}

struct canary_client *canary_client_new(const struct canary_options *o)
{
	struct canary_client *c;
	size_t blen;

	if (!o || !o->base_url ||
	    (strncmp(o->base_url, "http://", 7) != 0 && strncmp(o->base_url, "https://", 8) != 0) ||
	    (o->backoff_min_ms && o->backoff_max_ms && o->backoff_min_ms > o->backoff_max_ms)) {
		errno = EINVAL;
		return NULL;
	}
	pthread_once(&curl_once, curl_init);
	if (curl_init_rc != 0) {
		errno = ENOMEM;
		return NULL;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->id = atomic_fetch_add(&next_id, 1);
	snapshot_init(&c->snap);
	pthread_mutex_init(&c->lock, NULL);
	atomic_init(&c->stopping, 0);
	c->on_change = o->on_change;
	c->user = o->user;
	c->backoff_min_ms = o->backoff_min_ms ? o->backoff_min_ms : DEF_BACKOFF_MIN_MS;
	c->backoff_max_ms = o->backoff_max_ms ? o->backoff_max_ms : DEF_BACKOFF_MAX_MS;
	if (c->backoff_max_ms < c->backoff_min_ms)
		c->backoff_max_ms = c->backoff_min_ms;
	c->connect_timeout_ms = o->connect_timeout_ms ? o->connect_timeout_ms : DEF_CONNECT_MS;
	c->idle_timeout_ms = o->idle_timeout_ms ? o->idle_timeout_ms : DEF_IDLE_MS;
	c->max_event_bytes = o->max_event_bytes ? o->max_event_bytes : DEF_EVENT_MAX;
	c->rng = ((uint64_t)now_wall_ms() << 20) ^ ((uint64_t)getpid() << 8) ^ c->id ^
	         0x9e3779b97f4a7c15ull;
	blen = strlen(o->base_url);
	while (blen > 0 && o->base_url[blen - 1] == '/')
		blen--;
	c->base_url = strndup(o->base_url, blen);
	c->stream_url = c->base_url ? cat2(c->base_url, STREAM_PATH) : NULL;
	c->auth_header = o->token ? cat2("Authorization: Bearer ", o->token) : NULL;
	c->cache_path = o->cache_path ? strdup(o->cache_path) : NULL;
	c->multi = curl_multi_init();
	if (!c->stream_url || (o->token && !c->auth_header) || (o->cache_path && !c->cache_path) ||
	    !c->multi) {
		canary_client_free(c);
		errno = ENOMEM;
		return NULL;
	}
	sse_init(&c->sse, c->max_event_bytes, on_event, c);
	ruleset_init(&c->rs);
	c->st.stale_since_ms = now_wall_ms();
	cache_load(c);
	return c;
}

int canary_client_start(struct canary_client *c)
{
	int rc;

	if (c->started)
		return -EALREADY;
	atomic_store(&c->stopping, 0);
	rc = pthread_create(&c->thread, NULL, stream_main, c);
	if (rc != 0)
		return -rc;
	c->started = 1;
	return 0;
}

void canary_client_stop(struct canary_client *c)
{
	if (!c->started)
		return;
	atomic_store(&c->stopping, 1);
	curl_multi_wakeup(c->multi);
	pthread_join(c->thread, NULL);
	c->started = 0;
}

void canary_client_free(struct canary_client *c)
{
	if (!c)
		return;
	canary_client_stop(c);
	if (c->multi)
		curl_multi_cleanup(c->multi);
	sse_release(&c->sse);
	ruleset_release(&c->rs);
	snapshot_release(&c->snap);
	pthread_mutex_destroy(&c->lock);
	free(c->base_url);
	free(c->stream_url);
	free(c->auth_header);
	free(c->cache_path);
	free(c);
}

void canary_client_status(struct canary_client *c, struct canary_status *st)
{
	pthread_mutex_lock(&c->lock);
	*st = c->st;
	pthread_mutex_unlock(&c->lock);
}
