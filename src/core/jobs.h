/*
 * jobs.h - a small pool of threads that runs slow external actions for the
 * control thread: commands (rollback hooks, exec metric sources), HTTP POSTs
 * (webhook hooks, notifications) and HTTP GETs (query and http metric
 * sources).  The control thread never blocks on them: it submits a job, gets
 * an id, and polls for the result on a later tick.
 *
 * Commands run with posix_spawn in their own process group, stdin from
 * /dev/null, stdout+stderr captured (the first JOB_OUTPUT_MAX-1 bytes kept);
 * on timeout the whole group gets SIGKILL.  POSTs send a JSON body with
 * Content-Type: application/json through libcurl, with the timeout covering
 * connect and transfer; a 2xx answer is JOB_OK.  GETs are the same without a
 * body, and keep the whole response body (up to JOB_BODY_MAX bytes; a larger
 * one is JOB_ERROR) in a heap buffer the poller owns.
 *
 * Thread-safety: every function may be called from any thread; typically
 * only the control thread calls them.
 */
#ifndef CORE_JOBS_H
#define CORE_JOBS_H

#include <stddef.h>
#include <stdint.h>

#define JOB_OUTPUT_MAX 1024
#define JOB_BODY_MAX   (256 * 1024) /* GET response bodies */

enum job_status {
	JOB_OK,      /* exit code 0 / HTTP 2xx */
	JOB_FAILED,  /* non-zero exit, killed by a signal, HTTP non-2xx */
	JOB_TIMEOUT, /* killed / abandoned after its timeout */
	JOB_ERROR,   /* could not start: spawn failed, bad URL, connection refused, ... */
};

struct job_result {
	enum job_status status;
	int exit_code;   /* commands: exit status, -1 when signalled or not run */
	int signal;      /* commands: the terminating signal, 0 if none */
	int http_status; /* posts and gets: the response status, 0 when none */
	int64_t duration_ms;
	char output[JOB_OUTPUT_MAX]; /* captured stdout+stderr / response body, NUL-terminated */
	char error[256];             /* one human sentence when status != JOB_OK */
	/*
	 * GETs: the whole response body, NUL-terminated (body_len excludes the
	 * NUL), also for non-2xx answers; NULL for other jobs and when nothing
	 * was received.  Owned by whoever polled the result: job_result_release().
	 */
	char *body;
	size_t body_len;
};

struct jobs;

/* A pool of `threads` workers (>= 1) with at most max_queue waiting jobs. */
struct jobs *jobs_new(unsigned threads, size_t max_queue);

/*
 * Stops the pool: waiting jobs are dropped, running commands are killed
 * (SIGKILL to their group), running POSTs abandoned; joins the threads.
 * NULL is a no-op.
 */
void jobs_free(struct jobs *j);

/*
 * Queues a command; argv is copied (argv[0] is looked up in PATH when it
 * has no slash), NULL-terminated.  Returns a job id > 0, or 0 when the
 * queue is full or memory ran out.
 */
uint64_t jobs_submit_exec(struct jobs *j, const char *const *argv, uint64_t timeout_ms);

/*
 * Like jobs_submit_exec, but only the command's stdout is captured into
 * output; its stderr is the daemon's own (the log), so diagnostics never mix
 * with a value the command prints.
 */
uint64_t jobs_submit_exec_stdout(struct jobs *j, const char *const *argv, uint64_t timeout_ms);

/* Queues a POST of body (copied) to url.  Returns an id > 0, or 0. */
uint64_t jobs_submit_post(struct jobs *j, const char *url, const char *body, uint64_t timeout_ms);

/*
 * Queues a GET of url (http:// or https:// only; copied), with Accept:
 * application/json.  The result's body holds the response (see struct
 * job_result); output holds its first JOB_OUTPUT_MAX-1 bytes as well.
 * Returns an id > 0, or 0.
 */
uint64_t jobs_submit_get(struct jobs *j, const char *url, uint64_t timeout_ms);

/* TLS options of a GET over https:// (health probes of versions with upstream `tls:`). */
struct job_tls {
	int verify;             /* 0: neither the chain nor the name is checked */
	const char *ca;         /* PEM CA file; NULL: the system's trust store */
	const char *connect_to; /* "NAME:PORT:ADDR:PORT": the URL names NAME (the SNI and the
	                           name verified), the connection goes to ADDR; NULL: none */
};

/* jobs_submit_get with TLS options (copied); tls NULL is jobs_submit_get. */
uint64_t jobs_submit_get_tls(struct jobs *j, const char *url, uint64_t timeout_ms,
                             const struct job_tls *tls);

/*
 * Result of job id: 0 done (*out filled; the job is forgotten, a second
 * poll gives -ENOENT), 1 still queued or running, -ENOENT unknown id.
 */
int jobs_poll(struct jobs *j, uint64_t id, struct job_result *out);

/* Forgets job id: its result is discarded when it ends (fire and forget). */
void jobs_detach(struct jobs *j, uint64_t id);

/* Frees r's body (GETs) and sets it to NULL.  Safe on any polled result. */
void job_result_release(struct job_result *r);

/* "ok", "failed", "timeout", "error". */
const char *job_status_name(enum job_status s);

#endif
