/*
 * jobs.c - the pool behind jobs.h.
 *
 * One mutex guards the table of jobs (a doubly linked list, in submission
 * order) and the FIFO of queued jobs; a condition variable wakes idle
 * workers.  A job belongs to the table from submit until it is polled done,
 * detached, or dropped by jobs_free; while a worker runs it, only that worker
 * touches its request and result fields, and the state change to JOB_DONE
 * under the mutex publishes the result.
 *
 * Stopping: jobs_free writes an eventfd that is never read, so it stays
 * readable; every worker waiting on a child's pipe or inside curl polls it
 * too, and on seeing it kills its command's group (it still owns the
 * unreaped pid, so the group id cannot have been reused) or abandons its
 * POST or GET, then exits.
 *
 * Workers block every signal: SIGTERM/SIGHUP/SIGINT belong to the main
 * thread's signalfd, and children are reaped with waitpid on their own pid,
 * so no SIGCHLD handler is involved.  The spawned child gets an empty mask
 * and default dispositions back.
 */
#include "core/jobs.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/loop.h"

extern char **environ;

/* Longer timeouts are cut to this: keeps deadlines and poll()'s int in range. */
#define JOB_TIMEOUT_MAX_MS ((uint64_t)INT32_MAX)

/* After the leader's pipe closed, how often we look whether it has exited. */
#define EXIT_CHECK_MS 5

enum job_kind { JOB_KIND_EXEC, JOB_KIND_POST, JOB_KIND_GET };

enum job_state { JOB_QUEUED, JOB_RUNNING, JOB_DONE };

struct job {
	struct job *prev, *next; /* the table */
	struct job *qnext;       /* the queue, while JOB_QUEUED */
	uint64_t id;
	enum job_kind kind;
	enum job_state state;
	int detached;    /* nobody will poll: free it when it ends */
	int stdout_only; /* exec: stderr is not captured */
	uint64_t timeout_ms;
	char **argv;      /* exec: NULL-terminated copy */
	char *url;        /* post, get */
	char *body;       /* post */
	int tls_noverify; /* get: https without chain/name checks */
	char *ca;         /* get: CA file, or NULL */
	char *connect_to; /* get: curl CONNECT_TO entry, or NULL */
	struct job_result res;
};

struct jobs {
	pthread_mutex_t lock;
	pthread_cond_t wake;
	struct job *head, *tail;   /* the table */
	struct job *qhead, *qtail; /* queued jobs, oldest first */
	size_t queued;
	size_t max_queue;
	uint64_t next_id;
	int stop;
	int stop_fd; /* eventfd, readable once jobs_free started */
	unsigned nthreads;
	pthread_t *threads;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_FAILED_INIT;

static void curl_init_once(void)
{
	curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static int ms_until(uint64_t deadline, uint64_t now)
{
	return deadline > now ? (int)(deadline - now) : 0;
}

const char *job_status_name(enum job_status s)
{
	switch (s) {
	case JOB_OK:
		return "ok";
	case JOB_FAILED:
		return "failed";
	case JOB_TIMEOUT:
		return "timeout";
	case JOB_ERROR:
		return "error";
	}
	return "unknown";
}

static void job_free(struct job *job)
{
	if (!job)
		return;
	if (job->argv) {
		for (char **a = job->argv; *a; a++)
			free(*a);
		free(job->argv);
	}
	free(job->url);
	free(job->body);
	free(job->ca);
	free(job->connect_to);
	job_result_release(&job->res);
	free(job);
}

void job_result_release(struct job_result *r)
{
	if (!r)
		return;
	free(r->body);
	r->body = NULL;
	r->body_len = 0;
}

/* Table and queue helpers: the caller holds j->lock. */

static void table_unlink(struct jobs *j, struct job *job)
{
	if (job->prev)
		job->prev->next = job->next;
	else
		j->head = job->next;
	if (job->next)
		job->next->prev = job->prev;
	else
		j->tail = job->prev;
	job->prev = job->next = NULL;
}

static struct job *table_find(struct jobs *j, uint64_t id)
{
	for (struct job *job = j->head; job; job = job->next)
		if (job->id == id && !job->detached)
			return job;
	return NULL;
}

static struct job *queue_pop(struct jobs *j)
{
	struct job *job = j->qhead;

	if (!job)
		return NULL;
	j->qhead = job->qnext;
	if (!j->qhead)
		j->qtail = NULL;
	job->qnext = NULL;
	j->queued--;
	return job;
}

/* Takes ownership of job: enqueues it, or frees it and returns 0. */
static uint64_t enqueue(struct jobs *j, struct job *job)
{
	uint64_t id = 0;

	if (job->timeout_ms == 0)
		job->timeout_ms = 1;
	if (job->timeout_ms > JOB_TIMEOUT_MAX_MS)
		job->timeout_ms = JOB_TIMEOUT_MAX_MS;
	pthread_mutex_lock(&j->lock);
	if (j->stop || j->queued >= j->max_queue)
		goto out_unlock;
	id = job->id = j->next_id++;
	job->state = JOB_QUEUED;
	job->prev = j->tail;
	if (j->tail)
		j->tail->next = job;
	else
		j->head = job;
	j->tail = job;
	if (j->qtail)
		j->qtail->qnext = job;
	else
		j->qhead = job;
	j->qtail = job;
	j->queued++;
	pthread_cond_signal(&j->wake);
out_unlock:
	pthread_mutex_unlock(&j->lock);
	if (!id)
		job_free(job);
	return id;
}

/* --- commands --- */

/* Moves a pipe end off 0/1/2 (a daemon may run with them closed). */
static int fd_above_stdio(int fd)
{
	int nfd, err;

	if (fd > 2)
		return fd;
	nfd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
	err = errno;
	close(fd);
	errno = err;
	return nfd;
}

static void result_from_wait(struct job_result *res, int wstatus)
{
	if (WIFEXITED(wstatus)) {
		res->exit_code = WEXITSTATUS(wstatus);
		res->signal = 0;
	} else if (WIFSIGNALED(wstatus)) {
		res->exit_code = -1;
		res->signal = WTERMSIG(wstatus);
	}
}

/*
 * Spawns argv in its own process group with stdin from /dev/null and
 * stdout+stderr into wfd.  Returns the pid, or a negative errno.
 */
static pid_t spawn_child(char *const *argv, int wfd, int stdout_only)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	sigset_t none, dfl;
	pid_t pid = -1;
	int rc;

	rc = posix_spawn_file_actions_init(&fa);
	if (rc)
		return -rc;
	rc = posix_spawnattr_init(&attr);
	if (rc)
		goto out_fa;
	sigemptyset(&none);
	sigfillset(&dfl);
	sigdelset(&dfl, SIGKILL);
	sigdelset(&dfl, SIGSTOP);
	rc = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	if (!rc)
		rc = posix_spawn_file_actions_adddup2(&fa, wfd, 1);
	if (!rc && !stdout_only)
		rc = posix_spawn_file_actions_adddup2(&fa, wfd, 2);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
	/* fds opened without O_CLOEXEC elsewhere (libraries) must not leak either */
	if (!rc)
		rc = posix_spawn_file_actions_addclosefrom_np(&fa, 3);
#endif
	if (!rc)
		rc = posix_spawnattr_setflags(
		    &attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	if (!rc)
		rc = posix_spawnattr_setpgroup(&attr, 0);
	if (!rc)
		rc = posix_spawnattr_setsigmask(&attr, &none);
	if (!rc)
		rc = posix_spawnattr_setsigdefault(&attr, &dfl);
	if (rc)
		goto out_attr;
	if (strchr(argv[0], '/'))
		rc = posix_spawn(&pid, argv[0], &fa, &attr, argv, environ);
	else
		rc = posix_spawnp(&pid, argv[0], &fa, &attr, argv, environ);
out_attr:
	posix_spawnattr_destroy(&attr);
out_fa:
	posix_spawn_file_actions_destroy(&fa);
	return rc ? -rc : pid;
}

static void run_exec(struct jobs *j, struct job *job)
{
	struct job_result *res = &job->res;
	uint64_t deadline = clock_mono_ms() + job->timeout_ms;
	size_t kept = 0;
	int pfd[2], wstatus = 0, reaped = 1, wait_err = 0, timed_out = 0, stopped = 0;
	int pipe_open = 1;
	char buf[4096];
	pid_t pid;

	if (pipe2(pfd, O_CLOEXEC) == -1) {
		snprintf(res->error, sizeof(res->error), "could not run %s: %s", job->argv[0],
		         strerror(errno));
		res->status = JOB_ERROR;
		return;
	}
	pfd[0] = fd_above_stdio(pfd[0]);
	pfd[1] = fd_above_stdio(pfd[1]);
	if (pfd[0] == -1 || pfd[1] == -1) {
		snprintf(res->error, sizeof(res->error), "could not run %s: %s", job->argv[0],
		         strerror(errno));
		res->status = JOB_ERROR;
		goto out_close;
	}
	pid = spawn_child(job->argv, pfd[1], job->stdout_only);
	close(pfd[1]);
	pfd[1] = -1;
	if (pid < 0) {
		snprintf(res->error, sizeof(res->error), "could not run %s: %s", job->argv[0],
		         strerror((int)-pid));
		res->status = JOB_ERROR;
		goto out_close;
	}
	fcntl(pfd[0], F_SETFL, fcntl(pfd[0], F_GETFL) | O_NONBLOCK);

	/* Read until every holder of the pipe is gone, the deadline, or stop. */
	while (pipe_open) {
		struct pollfd p[2] = {{.fd = pfd[0], .events = POLLIN},
		                      {.fd = j->stop_fd, .events = POLLIN}};
		uint64_t now = clock_mono_ms();
		ssize_t n;

		if (now >= deadline) {
			timed_out = 1;
			break;
		}
		if (poll(p, 2, ms_until(deadline, now)) == -1) {
			if (errno == EINTR)
				continue;
			timed_out = 1; /* cannot wait any more: treat like the deadline */
			break;
		}
		if (p[1].revents) {
			stopped = 1;
			break;
		}
		if (!p[0].revents)
			continue;
		n = read(pfd[0], buf, sizeof(buf));
		if (n > 0) {
			size_t take = (size_t)n;

			if (take > JOB_OUTPUT_MAX - 1 - kept)
				take = JOB_OUTPUT_MAX - 1 - kept;
			memcpy(res->output + kept, buf, take); /* the rest is drained */
			kept += take;
		} else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
			pipe_open = 0;
		}
	}
	res->output[kept] = '\0';

	/* The pipe closed: the leader has usually exited; wait for it without reaping. */
	while (!timed_out && !stopped) {
		struct pollfd p = {.fd = j->stop_fd, .events = POLLIN};
		siginfo_t si;
		uint64_t now;
		int wait_ms;

		memset(&si, 0, sizeof(si));
		if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == -1 &&
		    errno != EINTR)
			break; /* waitpid below reports it */
		if (si.si_pid == pid)
			break;
		now = clock_mono_ms();
		if (now >= deadline) {
			timed_out = 1;
			break;
		}
		wait_ms = ms_until(deadline, now);
		if (poll(&p, 1, wait_ms < EXIT_CHECK_MS ? wait_ms : EXIT_CHECK_MS) > 0)
			stopped = 1;
	}
	/* The leader is not reaped yet, so its pid (= the group id) is still ours. */
	if (timed_out || stopped) {
		kill(-pid, SIGKILL);
		kill(pid, SIGKILL); /* in case it left its group */
	}
	while (waitpid(pid, &wstatus, 0) == -1) {
		if (errno != EINTR) {
			reaped = 0;
			wait_err = errno;
			break;
		}
	}
	if (reaped)
		result_from_wait(res, wstatus);

	if (stopped) {
		res->status = JOB_ERROR;
		snprintf(res->error, sizeof(res->error), "killed: the job pool is stopping");
	} else if (timed_out) {
		res->status = JOB_TIMEOUT;
		snprintf(res->error, sizeof(res->error), "did not finish within %llu ms; killed",
		         (unsigned long long)job->timeout_ms);
	} else if (!reaped) {
		res->status = JOB_ERROR;
		snprintf(res->error, sizeof(res->error), "could not wait for %s: %s", job->argv[0],
		         strerror(wait_err));
	} else if (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0) {
		res->status = JOB_OK;
	} else if (WIFEXITED(wstatus)) {
		res->status = JOB_FAILED;
		snprintf(res->error, sizeof(res->error), "exited with status %d",
		         WEXITSTATUS(wstatus));
	} else {
		res->status = JOB_FAILED;
		snprintf(res->error, sizeof(res->error), "killed by signal %d", res->signal);
	}
out_close:
	if (pfd[0] != -1)
		close(pfd[0]);
	if (pfd[1] != -1)
		close(pfd[1]);
}

/* --- POSTs and GETs --- */

struct capture {
	char *p; /* the result's output */
	size_t len;
	int whole;   /* GET: keep the whole body in res->body */
	int too_big; /* the body passed JOB_BODY_MAX: the transfer was stopped */
	int no_mem;  /* growing the body failed: the transfer was stopped */
	size_t bcap; /* allocated size of res->body */
	struct job_result *res;
};

static int body_append(struct capture *c, const char *data, size_t n)
{
	struct job_result *res = c->res;

	if (n > JOB_BODY_MAX - res->body_len) {
		c->too_big = 1;
		return -1;
	}
	if (res->body_len + n + 1 > c->bcap) {
		size_t cap = c->bcap ? c->bcap : 4096;
		char *p;

		while (cap < res->body_len + n + 1)
			cap *= 2;
		if (cap > JOB_BODY_MAX + 1)
			cap = JOB_BODY_MAX + 1;
		p = realloc(res->body, cap);
		if (!p) {
			c->no_mem = 1;
			return -1;
		}
		res->body = p;
		c->bcap = cap;
	}
	memcpy(res->body + res->body_len, data, n);
	res->body_len += n;
	res->body[res->body_len] = '\0';
	return 0;
}

static size_t capture_write(char *data, size_t size, size_t nmemb, void *userdata)
{
	struct capture *c = userdata;
	size_t n = size * nmemb, take = n;

	if (take > JOB_OUTPUT_MAX - 1 - c->len)
		take = JOB_OUTPUT_MAX - 1 - c->len;
	memcpy(c->p + c->len, data, take);
	c->len += take;
	c->p[c->len] = '\0';
	if (c->whole && body_append(c, data, n))
		return 0; /* stops the transfer: CURLE_WRITE_ERROR */
	return n;         /* past the cap a POST's answer is drained, not refused */
}

static curl_socket_t open_cloexec_socket(void *clientp, curlsocktype purpose,
                                         struct curl_sockaddr *addr)
{
	int fd = socket(addr->family, addr->socktype | SOCK_CLOEXEC, addr->protocol);

	return fd == -1 ? CURL_SOCKET_BAD : fd;
}

static int is_http_url(const char *url)
{
	return strncasecmp(url, "http://", 7) == 0 || strncasecmp(url, "https://", 8) == 0;
}

/* A POST of job->body, or a GET (get != 0) keeping the whole body. */
static void run_http(struct jobs *j, struct job *job, int get)
{
	struct job_result *res = &job->res;
	struct capture cap = {.p = res->output, .whole = get, .res = res};
	const char *verb = get ? "get" : "post";
	struct curl_slist *hdrs = NULL, *h, *conn_to = NULL;
	struct curl_waitfd stopw = {.fd = j->stop_fd, .events = CURL_WAIT_POLLIN};
	CURLcode cc = CURLE_OK;
	CURLMcode mc = CURLM_OK;
	CURLMsg *msg;
	CURLM *multi = NULL;
	CURL *easy = NULL;
	int running = 1, stopped = 0, left;
	long code = 0;

	res->exit_code = -1;
	res->output[0] = '\0';
	if (!is_http_url(job->url)) {
		res->status = JOB_ERROR;
		snprintf(res->error, sizeof(res->error), "only http:// and https:// URLs can be %s",
		         get ? "fetched" : "posted to");
		return;
	}
	if (curl_init_rc != CURLE_OK) {
		res->status = JOB_ERROR;
		snprintf(res->error, sizeof(res->error), "could not %s: %s", verb,
		         curl_easy_strerror(curl_init_rc));
		return;
	}
	easy = curl_easy_init();
	multi = curl_multi_init();
	h = curl_slist_append(NULL,
	                      get ? "Accept: application/json" : "Content-Type: application/json");
	if (h) {
		hdrs = h;
		/* no 100-continue round trip (and its 1 s wait) for bodies over 1 KiB */
		h = curl_slist_append(hdrs, "Expect:");
	}
	if (!easy || !multi || !h) {
		res->status = JOB_ERROR;
		snprintf(res->error, sizeof(res->error), "could not %s: out of memory", verb);
		goto out_free;
	}
	curl_easy_setopt(easy, CURLOPT_URL, job->url);
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
#else
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long)job->timeout_ms);
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(easy, CURLOPT_USERAGENT, "canaryd");
	if (get) {
		curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
	} else {
		curl_easy_setopt(easy, CURLOPT_POST, 1L);
		curl_easy_setopt(easy, CURLOPT_POSTFIELDS, job->body);
		curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(job->body));
	}
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, capture_write);
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, &cap);
	curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, open_cloexec_socket);
	if (job->tls_noverify) {
		curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 0L);
	}
	if (job->ca)
		curl_easy_setopt(easy, CURLOPT_CAINFO, job->ca);
	if (job->connect_to) {
		conn_to = curl_slist_append(NULL, job->connect_to);
		if (!conn_to) {
			res->status = JOB_ERROR;
			snprintf(res->error, sizeof(res->error), "could not %s: out of memory",
			         verb);
			goto out_free;
		}
		curl_easy_setopt(easy, CURLOPT_CONNECT_TO, conn_to);
	}
	mc = curl_multi_add_handle(multi, easy);

	/* The multi interface lets the stop eventfd interrupt a transfer at once. */
	while (mc == CURLM_OK) {
		mc = curl_multi_perform(multi, &running);
		if (mc != CURLM_OK || !running)
			break;
		stopw.revents = 0;
		mc = curl_multi_poll(multi, &stopw, 1, 1000, NULL);
		if (stopw.revents) {
			stopped = 1;
			break;
		}
	}
	if (stopped) {
		res->status = JOB_ERROR;
		snprintf(res->error, sizeof(res->error), "abandoned: the job pool is stopping");
		goto out_remove;
	}
	if (mc != CURLM_OK) {
		res->status = JOB_ERROR;
		snprintf(res->error, sizeof(res->error), "could not %s: %s", verb,
		         curl_multi_strerror(mc));
		goto out_remove;
	}
	cc = CURLE_GOT_NOTHING;
	while ((msg = curl_multi_info_read(multi, &left)))
		if (msg->msg == CURLMSG_DONE && msg->easy_handle == easy)
			cc = msg->data.result;
	curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &code);
	res->http_status = (int)code;
	if (cc == CURLE_OPERATION_TIMEDOUT) {
		res->status = JOB_TIMEOUT;
		snprintf(res->error, sizeof(res->error), "did not finish within %llu ms; abandoned",
		         (unsigned long long)job->timeout_ms);
	} else if (cap.too_big) {
		res->status = JOB_ERROR;
		snprintf(res->error, sizeof(res->error),
		         "the response is larger than %d bytes; abandoned", JOB_BODY_MAX);
	} else if (cap.no_mem) {
		res->status = JOB_ERROR;
		snprintf(res->error, sizeof(res->error), "could not %s: out of memory", verb);
	} else if (cc != CURLE_OK) {
		res->status = JOB_ERROR;
		snprintf(res->error, sizeof(res->error), "could not %s: %s", verb,
		         curl_easy_strerror(cc));
	} else if (code >= 200 && code <= 299) {
		res->status = JOB_OK;
	} else {
		res->status = JOB_FAILED;
		snprintf(res->error, sizeof(res->error), "answered %ld", code);
	}
out_remove:
	curl_multi_remove_handle(multi, easy);
out_free:
	if (multi)
		curl_multi_cleanup(multi);
	if (easy)
		curl_easy_cleanup(easy);
	curl_slist_free_all(hdrs);
	curl_slist_free_all(conn_to);
	if (res->status != JOB_OK && res->status != JOB_FAILED)
		job_result_release(res); /* a partial body means nothing */
}

/* --- the pool --- */

static void *worker_main(void *arg)
{
	struct jobs *j = arg;
	struct job *job;
	uint64_t start;

	for (;;) {
		pthread_mutex_lock(&j->lock);
		while (!j->stop && !j->qhead)
			pthread_cond_wait(&j->wake, &j->lock);
		if (j->stop) {
			pthread_mutex_unlock(&j->lock);
			break;
		}
		job = queue_pop(j);
		job->state = JOB_RUNNING;
		pthread_mutex_unlock(&j->lock);

		start = clock_mono_ms();
		if (job->kind == JOB_KIND_EXEC)
			run_exec(j, job);
		else
			run_http(j, job, job->kind == JOB_KIND_GET);
		job->res.duration_ms = (int64_t)(clock_mono_ms() - start);

		pthread_mutex_lock(&j->lock);
		if (job->detached) {
			table_unlink(j, job);
			job_free(job);
		} else {
			job->state = JOB_DONE;
		}
		pthread_mutex_unlock(&j->lock);
	}
	return NULL;
}

static void stop_and_join(struct jobs *j, unsigned started)
{
	pthread_mutex_lock(&j->lock);
	j->stop = 1;
	pthread_cond_broadcast(&j->wake);
	pthread_mutex_unlock(&j->lock);
	/* never read, so it stays readable for every poll that includes it */
	(void)eventfd_write(j->stop_fd, 1);
	for (unsigned i = 0; i < started; i++)
		pthread_join(j->threads[i], NULL);
}

struct jobs *jobs_new(unsigned threads, size_t max_queue)
{
	struct jobs *j;
	sigset_t all, old;
	unsigned started = 0;
	int rc = 0;

	if (threads == 0 || max_queue == 0) {
		errno = EINVAL;
		return NULL;
	}
	pthread_once(&curl_once, curl_init_once);
	j = calloc(1, sizeof(*j));
	if (!j)
		return NULL;
	j->threads = calloc(threads, sizeof(*j->threads));
	if (!j->threads)
		goto out_free;
	j->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (j->stop_fd == -1)
		goto out_free;
	j->max_queue = max_queue;
	j->next_id = 1;
	j->nthreads = threads;
	pthread_mutex_init(&j->lock, NULL);
	pthread_cond_init(&j->wake, NULL);

	/* Workers start with every signal blocked: they inherit this mask. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (; started < threads; started++) {
		rc = pthread_create(&j->threads[started], NULL, worker_main, j);
		if (rc)
			break;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc) {
		stop_and_join(j, started);
		pthread_cond_destroy(&j->wake);
		pthread_mutex_destroy(&j->lock);
		close(j->stop_fd);
		errno = rc;
		goto out_free;
	}
	return j;
out_free:
	free(j->threads);
	free(j);
	return NULL;
}

void jobs_free(struct jobs *j)
{
	struct job *job, *next;

	if (!j)
		return;
	stop_and_join(j, j->nthreads);
	/* No worker is left: queued and finished jobs are only in the table. */
	for (job = j->head; job; job = next) {
		next = job->next;
		job_free(job);
	}
	pthread_cond_destroy(&j->wake);
	pthread_mutex_destroy(&j->lock);
	close(j->stop_fd);
	free(j->threads);
	free(j);
}

static struct job *job_alloc(enum job_kind kind)
{
	struct job *job = calloc(1, sizeof(*job));

	if (!job)
		return NULL;
	job->kind = kind;
	job->res.exit_code = -1;
	return job;
}

static uint64_t submit_exec(struct jobs *j, const char *const *argv, uint64_t timeout_ms,
                            int stdout_only)
{
	struct job *job;
	size_t n = 0;

	if (!j || !argv || !argv[0])
		return 0;
	while (argv[n])
		n++;
	job = job_alloc(JOB_KIND_EXEC);
	if (!job)
		return 0;
	job->argv = calloc(n + 1, sizeof(*job->argv));
	if (!job->argv)
		goto out_free;
	for (size_t i = 0; i < n; i++) {
		job->argv[i] = strdup(argv[i]);
		if (!job->argv[i])
			goto out_free;
	}
	job->timeout_ms = timeout_ms;
	job->stdout_only = stdout_only;
	return enqueue(j, job);
out_free:
	job_free(job);
	return 0;
}

uint64_t jobs_submit_exec(struct jobs *j, const char *const *argv, uint64_t timeout_ms)
{
	return submit_exec(j, argv, timeout_ms, 0);
}

uint64_t jobs_submit_exec_stdout(struct jobs *j, const char *const *argv, uint64_t timeout_ms)
{
	return submit_exec(j, argv, timeout_ms, 1);
}

uint64_t jobs_submit_post(struct jobs *j, const char *url, const char *body, uint64_t timeout_ms)
{
	struct job *job;

	if (!j || !url)
		return 0;
	job = job_alloc(JOB_KIND_POST);
	if (!job)
		return 0;
	job->url = strdup(url);
	job->body = strdup(body ? body : "");
	if (!job->url || !job->body) {
		job_free(job);
		return 0;
	}
	job->timeout_ms = timeout_ms;
	return enqueue(j, job);
}

uint64_t jobs_submit_get(struct jobs *j, const char *url, uint64_t timeout_ms)
{
	return jobs_submit_get_tls(j, url, timeout_ms, NULL);
}

uint64_t jobs_submit_get_tls(struct jobs *j, const char *url, uint64_t timeout_ms,
                             const struct job_tls *tls)
{
	struct job *job;

	if (!j || !url)
		return 0;
	job = job_alloc(JOB_KIND_GET);
	if (!job)
		return 0;
	job->url = strdup(url);
	if (tls) {
		job->tls_noverify = !tls->verify;
		job->ca = tls->ca ? strdup(tls->ca) : NULL;
		job->connect_to = tls->connect_to ? strdup(tls->connect_to) : NULL;
	}
	if (!job->url || (tls && tls->ca && !job->ca) ||
	    (tls && tls->connect_to && !job->connect_to)) {
		job_free(job);
		return 0;
	}
	job->timeout_ms = timeout_ms;
	return enqueue(j, job);
}

int jobs_poll(struct jobs *j, uint64_t id, struct job_result *out)
{
	struct job *job;
	int rc = -ENOENT;

	if (!j)
		return -ENOENT;
	pthread_mutex_lock(&j->lock);
	job = table_find(j, id);
	if (!job)
		goto out_unlock;
	if (job->state != JOB_DONE) {
		rc = 1;
		goto out_unlock;
	}
	if (out) {
		*out = job->res;
		job->res.body = NULL; /* the poller owns it now */
	}
	table_unlink(j, job);
	job_free(job);
	rc = 0;
out_unlock:
	pthread_mutex_unlock(&j->lock);
	return rc;
}

void jobs_detach(struct jobs *j, uint64_t id)
{
	struct job *job;

	if (!j)
		return;
	pthread_mutex_lock(&j->lock);
	job = table_find(j, id);
	if (job && job->state == JOB_DONE) {
		table_unlink(j, job);
		job_free(job);
	} else if (job) {
		/* queued: stays queued and runs; the worker frees it when it ends */
		job->detached = 1;
	}
	pthread_mutex_unlock(&j->lock);
}
