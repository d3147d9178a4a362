/* Unit tests for src/core/jobs: commands (output, status, timeout kills the
 * group, spawn errors, output cap), the queue and the table (full queue,
 * unknown ids, detach, free while running), and POSTs and GETs against a
 * loopback server run by the test itself. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/jobs.h"
#include "core/loop.h"

/* --- helpers --- */

static void sleep_ms(unsigned ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

/* Polls id until it is done or max_ms passed; returns jobs_poll's last answer. */
static int wait_job(struct jobs *j, uint64_t id, struct job_result *res, unsigned max_ms)
{
	uint64_t deadline = clock_mono_ms() + max_ms;
	int rc;

	while ((rc = jobs_poll(j, id, res)) == 1 && clock_mono_ms() < deadline)
		sleep_ms(2);
	return rc;
}

static void run_one(const char *const *argv, uint64_t timeout_ms, struct job_result *res)
{
	struct jobs *j = jobs_new(1, 4);
	uint64_t id;

	assert_non_null(j);
	id = jobs_submit_exec(j, argv, timeout_ms);
	assert_true(id > 0);
	assert_int_equal(wait_job(j, id, res, 10000), 0);
	jobs_free(j);
}

struct tmpdir {
	char path[64];
	char file[128];
};

static void tmpdir_make(struct tmpdir *t, const char *name)
{
	snprintf(t->path, sizeof(t->path), "/tmp/canaryd-jobs-XXXXXX");
	assert_non_null(mkdtemp(t->path));
	snprintf(t->file, sizeof(t->file), "%s/%s", t->path, name);
}

static void tmpdir_remove(struct tmpdir *t)
{
	unlink(t->file);
	rmdir(t->path);
}

/* Waits until path holds a pid followed by a newline; returns it, or -1. */
static pid_t wait_pid_file(const char *path, unsigned max_ms)
{
	uint64_t deadline = clock_mono_ms() + max_ms;

	do {
		char buf[32] = "";
		FILE *f = fopen(path, "r");

		if (f) {
			size_t n = fread(buf, 1, sizeof(buf) - 1, f);

			fclose(f);
			buf[n] = '\0';
			if (n > 0 && buf[n - 1] == '\n')
				return (pid_t)strtol(buf, NULL, 10);
		}
		sleep_ms(2);
	} while (clock_mono_ms() < deadline);
	return -1;
}

/* Gone, or a zombie waiting for init to reap it: either way no longer running. */
static int process_dead(pid_t pid)
{
	char path[64], buf[256];
	const char *state;
	ssize_t n;
	int fd;

	if (kill(pid, 0) == -1 && errno == ESRCH)
		return 1;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd == -1)
		return 1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 1;
	buf[n] = '\0';
	state = strrchr(buf, ')'); /* "pid (comm) S ..." */
	return state && (state[2] == 'Z' || state[2] == 'X');
}

static int wait_process_dead(pid_t pid, unsigned max_ms)
{
	uint64_t deadline = clock_mono_ms() + max_ms;

	while (!process_dead(pid)) {
		if (clock_mono_ms() >= deadline)
			return 0;
		sleep_ms(5);
	}
	return 1;
}

static int file_exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

/* --- commands --- */

static void test_exec_ok_captures_output(void **state)
{
	const char *const argv[] = {"/bin/sh", "-c", "echo hi; echo err >&2", NULL};
	const char *const stdin_argv[] = {"sh", "-c", "cat; echo done", NULL};
	struct job_result res;

	run_one(argv, 5000, &res);
	assert_int_equal(res.status, JOB_OK);
	assert_int_equal(res.exit_code, 0);
	assert_int_equal(res.signal, 0);
	assert_int_equal(res.http_status, 0);
	assert_string_equal(res.output, "hi\nerr\n");
	assert_string_equal(res.error, "");
	assert_true(res.duration_ms >= 0 && res.duration_ms < 5000);

	/* looked up in PATH; stdin is /dev/null, so cat ends at once */
	run_one(stdin_argv, 5000, &res);
	assert_int_equal(res.status, JOB_OK);
	assert_string_equal(res.output, "done\n");
}

static void test_exec_nonzero_exit(void **state)
{
	const char *const argv[] = {"/bin/sh", "-c", "echo bad; exit 3", NULL};
	struct job_result res;

	run_one(argv, 5000, &res);
	assert_int_equal(res.status, JOB_FAILED);
	assert_int_equal(res.exit_code, 3);
	assert_int_equal(res.signal, 0);
	assert_string_equal(res.output, "bad\n");
	assert_string_equal(res.error, "exited with status 3");
}

static void test_exec_killed_by_signal(void **state)
{
	const char *const argv[] = {"/bin/sh", "-c", "kill -9 $$", NULL};
	struct job_result res;

	run_one(argv, 5000, &res);
	assert_int_equal(res.status, JOB_FAILED);
	assert_int_equal(res.exit_code, -1);
	assert_int_equal(res.signal, SIGKILL);
	assert_string_equal(res.error, "killed by signal 9");
}

static void test_exec_timeout_kills_group(void **state)
{
	struct tmpdir t;
	char script[256];
	const char *argv[] = {"/bin/sh", "-c", script, NULL};
	struct job_result res;
	uint64_t start;
	pid_t pid;

	tmpdir_make(&t, "pid");
	/* the sleep is a separate process of the group: only a group kill reaches it */
	snprintf(script, sizeof(script), "sleep 5 & echo $! > %s; wait", t.file);
	start = clock_mono_ms();
	run_one(argv, 200, &res);
	assert_true(clock_mono_ms() - start < 2000);
	assert_int_equal(res.status, JOB_TIMEOUT);
	assert_int_equal(res.signal, SIGKILL);
	assert_string_equal(res.error, "did not finish within 200 ms; killed");
	assert_true(res.duration_ms >= 200 && res.duration_ms < 2000);
	pid = wait_pid_file(t.file, 1000);
	assert_true(pid > 0);
	assert_true(wait_process_dead(pid, 2000));
	tmpdir_remove(&t);
}

static void test_exec_missing_binary(void **state)
{
	const char *const abs_argv[] = {"/x/y", NULL};
	const char *const path_argv[] = {"canaryd-no-such-binary", "arg", NULL};
	struct job_result res;

	run_one(abs_argv, 5000, &res);
	assert_int_equal(res.status, JOB_ERROR);
	assert_int_equal(res.exit_code, -1);
	assert_string_equal(res.error, "could not run /x/y: No such file or directory");

	run_one(path_argv, 5000, &res);
	assert_int_equal(res.status, JOB_ERROR);
	assert_string_equal(res.error,
	                    "could not run canaryd-no-such-binary: No such file or directory");
}

static void test_exec_output_capped_and_drained(void **state)
{
	/* 1 MiB: far more than a pipe holds, so the child blocks unless we drain */
	const char *const argv[] = {"/bin/sh", "-c", "head -c 1048576 /dev/zero | tr '\\000' x",
	                            NULL};
	struct job_result res;

	run_one(argv, 10000, &res);
	assert_int_equal(res.status, JOB_OK);
	assert_int_equal(strlen(res.output), JOB_OUTPUT_MAX - 1);
	for (size_t i = 0; i < JOB_OUTPUT_MAX - 1; i++)
		assert_int_equal(res.output[i], 'x');
}

/* The hex mask after "name:\t" in a /proc status text; ~0 when absent. */
static unsigned long long status_mask(const char *text, const char *name)
{
	const char *p = strstr(text, name);

	return p ? strtoull(p + strlen(name), NULL, 16) : ~0ull;
}

static void test_exec_child_gets_clean_mask_and_no_fds(void **state)
{
	const char *const sig_argv[] = {"/bin/sh", "-c",
	                                "exec grep -E '^Sig(Blk|Ign)' /proc/self/status", NULL};
	const char *const fd_argv[] = {"/bin/sh", "-c", "ls /proc/$$/fd", NULL};
	struct sigaction ign = {.sa_handler = SIG_IGN}, old;
	struct job_result res;
	int leaky;

	/* an ignored signal in the daemon must be back to default in the child */
	sigaction(SIGPIPE, &ign, &old);
	run_one(sig_argv, 5000, &res);
	sigaction(SIGPIPE, &old, NULL);
	assert_int_equal(res.status, JOB_OK);
	assert_true(status_mask(res.output, "SigBlk:") == 0);
	/* glibc's posix_spawn leaves its two internal signals (32, 33) ignored */
	assert_true((status_mask(res.output, "SigIgn:") & 0x7fffffffull) == 0);

	/* an fd opened without O_CLOEXEC elsewhere in the process is not inherited */
	leaky = dup(2);
	assert_true(leaky > 2);
	run_one(fd_argv, 5000, &res);
	close(leaky);
	assert_int_equal(res.status, JOB_OK);
	assert_string_equal(res.output, "0\n1\n2\n");
}

/* Reads the SigBlk mask of every thread but the caller. */
static int other_threads_block(int signo, int *nthreads)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	int all = 1;

	*nthreads = 0;
	if (!d)
		return 0;
	while ((e = readdir(d))) {
		char path[320], line[128];
		FILE *f;

		if (e->d_name[0] == '.' || strtol(e->d_name, NULL, 10) == (long)gettid())
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/status", e->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		while (fgets(line, sizeof(line), f)) {
			if (strncmp(line, "SigBlk:", 7) == 0) {
				unsigned long long mask = strtoull(line + 7, NULL, 16);

				(*nthreads)++;
				if (!(mask & (1ull << (signo - 1))))
					all = 0;
			}
		}
		fclose(f);
	}
	closedir(d);
	return all;
}

static void test_workers_block_signals(void **state)
{
	struct jobs *j = jobs_new(3, 4);
	int n;

	assert_non_null(j);
	assert_true(other_threads_block(SIGTERM, &n));
	assert_true(n >= 3); /* the workers, and any sanitizer runtime thread */
	assert_true(other_threads_block(SIGHUP, &n));
	assert_true(other_threads_block(SIGINT, &n));
	assert_true(other_threads_block(SIGCHLD, &n));
	jobs_free(j);
}

/* --- the queue and the table --- */

static void test_queue_full_and_ids(void **state)
{
	struct tmpdir t;
	char script[256];
	const char *argv[] = {"/bin/sh", "-c", script, NULL};
	const char *const quick[] = {"true", NULL};
	struct jobs *j = jobs_new(1, 2);
	uint64_t start, deadline;

	assert_non_null(j);
	tmpdir_make(&t, "running");
	snprintf(script, sizeof(script), "touch %s; sleep 5", t.file);
	assert_int_equal(jobs_submit_exec(j, argv, 30000), 1);
	/* once the marker exists the only worker is busy and the queue is empty */
	deadline = clock_mono_ms() + 5000;
	while (!file_exists(t.file) && clock_mono_ms() < deadline)
		sleep_ms(2);
	assert_true(file_exists(t.file));
	assert_int_equal(jobs_submit_exec(j, quick, 1000), 2);
	assert_int_equal(jobs_submit_post(j, "http://127.0.0.1:9/", "{}", 1000), 3);
	assert_int_equal(jobs_submit_exec(j, quick, 1000), 0);
	assert_int_equal(jobs_submit_post(j, "http://127.0.0.1:9/", "{}", 1000), 0);
	assert_int_equal(jobs_poll(j, 1, NULL), 1);
	assert_int_equal(jobs_poll(j, 2, NULL), 1);
	assert_int_equal(jobs_poll(j, 3, NULL), 1);

	/* frees with one running and two queued jobs: no waiting for the sleep */
	start = clock_mono_ms();
	jobs_free(j);
	assert_true(clock_mono_ms() - start < 2000);
	tmpdir_remove(&t);
}

static void test_poll_unknown_and_twice(void **state)
{
	const char *const argv[] = {"true", NULL};
	struct jobs *j = jobs_new(2, 4);
	struct job_result res;
	uint64_t id;

	assert_non_null(j);
	assert_int_equal(jobs_poll(j, 0, &res), -ENOENT);
	assert_int_equal(jobs_poll(j, 12345, &res), -ENOENT);
	id = jobs_submit_exec(j, argv, 5000);
	assert_int_equal(id, 1);
	assert_int_equal(wait_job(j, id, &res, 5000), 0);
	assert_int_equal(res.status, JOB_OK);
	assert_int_equal(jobs_poll(j, id, &res), -ENOENT);
	jobs_detach(j, id);   /* forgotten already: a no-op */
	jobs_detach(j, 999);  /* unknown: a no-op */
	jobs_detach(NULL, 1); /* NULL: a no-op */
	assert_int_equal(jobs_poll(NULL, 1, &res), -ENOENT);
	jobs_free(j);
}

static void test_detach(void **state)
{
	const char *const slow[] = {"/bin/sh", "-c", "sleep 0.1; echo x", NULL};
	const char *const quick[] = {"/bin/sh", "-c", "echo y", NULL};
	struct jobs *j = jobs_new(1, 8);
	struct job_result res;
	uint64_t a, b, c, d;

	assert_non_null(j);
	/* detached while queued or running: the worker discards it */
	a = jobs_submit_exec(j, slow, 5000);
	b = jobs_submit_exec(j, slow, 5000);
	assert_true(a > 0 && b > 0);
	jobs_detach(j, a);
	jobs_detach(j, b);
	assert_int_equal(jobs_poll(j, a, &res), -ENOENT);
	assert_int_equal(jobs_poll(j, b, &res), -ENOENT);

	/* detached once done: discarded at once.  One worker, so d ends after c. */
	c = jobs_submit_exec(j, quick, 5000);
	d = jobs_submit_exec(j, quick, 5000);
	assert_int_equal(wait_job(j, d, &res, 5000), 0);
	assert_string_equal(res.output, "y\n");
	jobs_detach(j, c);
	assert_int_equal(jobs_poll(j, c, &res), -ENOENT);

	/* the pool still works after detached jobs ended */
	d = jobs_submit_exec(j, quick, 5000);
	assert_int_equal(wait_job(j, d, &res, 5000), 0);
	assert_int_equal(res.status, JOB_OK);
	jobs_free(j);
}

static void test_free_with_running_job(void **state)
{
	struct tmpdir t;
	char script[256];
	const char *argv[] = {"/bin/sh", "-c", script, NULL};
	struct jobs *j = jobs_new(1, 4);
	uint64_t start;
	pid_t pid;

	assert_non_null(j);
	tmpdir_make(&t, "pid");
	snprintf(script, sizeof(script), "sleep 30 & echo $! > %s; wait", t.file);
	assert_true(jobs_submit_exec(j, argv, 60000) > 0);
	assert_true(jobs_submit_exec(j, argv, 60000) > 0); /* stays queued, dropped */
	pid = wait_pid_file(t.file, 5000);
	assert_true(pid > 0);
	start = clock_mono_ms();
	jobs_free(j);
	assert_true(clock_mono_ms() - start < 2000);
	assert_true(wait_process_dead(pid, 2000));
	tmpdir_remove(&t);
}

static void test_new_rejects_bad_sizes(void **state)
{
	const char *const empty[] = {NULL};
	struct jobs *j;

	assert_null(jobs_new(0, 4));
	assert_null(jobs_new(1, 0));
	jobs_free(NULL);
	j = jobs_new(1, 1);
	assert_non_null(j);
	assert_int_equal(jobs_submit_exec(j, empty, 1000), 0);
	assert_int_equal(jobs_submit_exec(j, NULL, 1000), 0);
	assert_int_equal(jobs_submit_post(j, NULL, "{}", 1000), 0);
	jobs_free(j);
}

static void test_status_names(void **state)
{
	assert_string_equal(job_status_name(JOB_OK), "ok");
	assert_string_equal(job_status_name(JOB_FAILED), "failed");
	assert_string_equal(job_status_name(JOB_TIMEOUT), "timeout");
	assert_string_equal(job_status_name(JOB_ERROR), "error");
}

/* --- POSTs against a loopback server --- */

struct srv {
	int lfd;
	int port;
	int status;        /* 0: never answer, read until the client leaves */
	size_t answer_len; /* response body bytes ('b'), 0 for "ok" */
	pthread_t th;
	atomic_int got_request;
	char head[4096]; /* request line and headers, NUL-terminated */
	char *body;      /* request body, NUL-terminated */
	size_t body_len;
};

/* Reads with a bounded wait; returns read()'s answer, or -1 after max_ms. */
static ssize_t read_within(int fd, char *buf, size_t len, int max_ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};

	if (poll(&p, 1, max_ms) != 1)
		return -1;
	return read(fd, buf, len);
}

static void write_all(int fd, const char *p, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n <= 0)
			return;
		p += n;
		len -= (size_t)n;
	}
}

static void *srv_main(void *arg)
{
	struct srv *s = arg;
	struct pollfd p = {.fd = s->lfd, .events = POLLIN};
	char buf[8192], *end, *cl;
	size_t have = 0, want;
	int fd;

	if (poll(&p, 1, 5000) != 1)
		return NULL;
	fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
	if (fd == -1)
		return NULL;
	/* the head */
	while (!(end = strstr(s->head, "\r\n\r\n"))) {
		ssize_t n;

		if (have >= sizeof(s->head) - 1)
			goto out_close;
		n = read_within(fd, s->head + have, sizeof(s->head) - 1 - have, 5000);
		if (n <= 0)
			goto out_close;
		have += (size_t)n;
		s->head[have] = '\0';
	}
	end += 4;
	cl = strcasestr(s->head, "\r\ncontent-length:");
	want = cl ? strtoul(cl + 17, NULL, 10) : 0;
	s->body = calloc(1, want + 1);
	if (!s->body)
		goto out_close;
	s->body_len = have - (size_t)(end - s->head);
	memcpy(s->body, end, s->body_len);
	*end = '\0';
	while (s->body_len < want) {
		ssize_t n = read_within(fd, s->body + s->body_len, want - s->body_len, 5000);

		if (n <= 0)
			goto out_close;
		s->body_len += (size_t)n;
	}
	atomic_store(&s->got_request, 1);
	if (s->status == 0) {
		while (read_within(fd, buf, sizeof(buf), 5000) > 0)
			;
		goto out_close;
	}
	{
		size_t blen = s->answer_len ? s->answer_len : 2;
		char *resp = malloc(blen + 128);
		int hl;

		if (!resp)
			goto out_close;
		hl = snprintf(resp, 128,
		              "HTTP/1.1 %d X\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
		              s->status, blen);
		if (s->answer_len)
			memset(resp + hl, 'b', blen);
		else
			memcpy(resp + hl, "ok", 2);
		write_all(fd, resp, (size_t)hl + blen);
		free(resp);
	}
out_close:
	close(fd);
	return NULL;
}

/* Binds 127.0.0.1:0; listens and serves one request unless listen_ is 0. */
static void srv_start(struct srv *s, int status, size_t answer_len, int listen_)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t slen = sizeof(sa);

	memset(s, 0, sizeof(*s));
	s->status = status;
	s->answer_len = answer_len;
	s->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(s->lfd >= 0);
	assert_int_equal(bind(s->lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&sa, &slen), 0);
	s->port = ntohs(sa.sin_port);
	if (!listen_)
		return; /* bound but not listening: connections are refused */
	assert_int_equal(listen(s->lfd, 4), 0);
	assert_int_equal(pthread_create(&s->th, NULL, srv_main, s), 0);
}

/* Waits for the server thread; s->body stays for the checks (free it after). */
static void srv_stop(struct srv *s, int listening)
{
	if (listening)
		pthread_join(s->th, NULL);
	close(s->lfd);
}

static void srv_url(const struct srv *s, char *buf, size_t len)
{
	snprintf(buf, len, "http://127.0.0.1:%d/hook", s->port);
}

static void post_one(const char *url, const char *body, uint64_t timeout_ms, struct job_result *res)
{
	struct jobs *j = jobs_new(1, 4);
	uint64_t id;

	assert_non_null(j);
	id = jobs_submit_post(j, url, body, timeout_ms);
	assert_true(id > 0);
	assert_int_equal(wait_job(j, id, res, 10000), 0);
	jobs_free(j);
}

/*
 * Starts a one-request server (see srv_start), posts body to it and waits for
 * both ends.  Returns how long the post took, in ms; s->body is the caller's.
 */
static uint64_t srv_post(struct srv *s, int status, size_t answer_len, int listen_,
                         const char *body, uint64_t timeout_ms, struct job_result *res)
{
	char url[64];
	uint64_t start;

	srv_start(s, status, answer_len, listen_);
	srv_url(s, url, sizeof(url));
	start = clock_mono_ms();
	post_one(url, body, timeout_ms, res);
	start = clock_mono_ms() - start;
	srv_stop(s, listen_);
	return start;
}

static void test_post_ok_sends_json(void **state)
{
	const char *body = "{\"event\":\"rollback\",\"service\":\"api\"}";
	struct job_result res;
	struct srv s;

	srv_post(&s, 200, 0, 1, body, 5000, &res);
	assert_int_equal(res.status, JOB_OK);
	assert_int_equal(res.http_status, 200);
	assert_string_equal(res.output, "ok");
	assert_string_equal(res.error, "");
	assert_int_equal(strncmp(s.head, "POST /hook HTTP/1.1\r\n", 21), 0);
	assert_non_null(strcasestr(s.head, "\r\nContent-Type: application/json\r\n"));
	assert_non_null(strcasestr(s.head, "\r\nUser-Agent: canaryd\r\n"));
	assert_string_equal(s.body, body);
	free(s.body);
}

static void test_post_non_2xx_is_failed(void **state)
{
	struct job_result res;
	struct srv s;

	srv_post(&s, 500, 0, 1, "{}", 5000, &res);
	assert_int_equal(res.status, JOB_FAILED);
	assert_int_equal(res.http_status, 500);
	assert_string_equal(res.error, "answered 500");
	assert_string_equal(res.output, "ok");
	free(s.body);
}

static void test_post_large_body_capped_answer(void **state)
{
	struct job_result res;
	struct srv s;
	char *body = malloc(3001);

	assert_non_null(body);
	memset(body, 'a', 3000);
	body[0] = '"';
	body[2999] = '"';
	body[3000] = '\0';
	/* a 5000-byte answer, and no "Expect: 100-continue" wait */
	assert_true(srv_post(&s, 200, 5000, 1, body, 5000, &res) < 900);
	assert_int_equal(res.status, JOB_OK);
	assert_int_equal(strlen(res.output), JOB_OUTPUT_MAX - 1);
	assert_int_equal(s.body_len, 3000);
	assert_string_equal(s.body, body);
	assert_null(strcasestr(s.head, "\r\nExpect:"));
	free(s.body);
	free(body);
}

static void test_post_connection_refused(void **state)
{
	struct job_result res;
	struct srv s;

	srv_post(&s, 200, 0, 0, "{}", 5000, &res);
	assert_int_equal(res.status, JOB_ERROR);
	assert_int_equal(res.http_status, 0);
	assert_string_equal(res.error, "could not post: Couldn't connect to server");
}

static void test_post_silent_server_times_out(void **state)
{
	struct job_result res;
	struct srv s;

	assert_true(srv_post(&s, 0, 0, 1, "{}", 200, &res) < 2000);
	assert_int_equal(atomic_load(&s.got_request), 1);
	assert_int_equal(res.status, JOB_TIMEOUT);
	assert_string_equal(res.error, "did not finish within 200 ms; abandoned");
	free(s.body);
}

static void test_post_only_http(void **state)
{
	const char *bad[] = {"ftp://127.0.0.1/x", "file:///etc/passwd", "127.0.0.1:80/x", ""};
	struct job_result res;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		post_one(bad[i], "{}", 1000, &res);
		assert_int_equal(res.status, JOB_ERROR);
		assert_string_equal(res.error, "only http:// and https:// URLs can be posted to");
	}
}

static void test_free_abandons_running_post(void **state)
{
	struct jobs *j = jobs_new(1, 4);
	struct srv s;
	char url[64];
	uint64_t start, deadline;

	assert_non_null(j);
	srv_start(&s, 0, 0, 1);
	srv_url(&s, url, sizeof(url));
	assert_true(jobs_submit_post(j, url, "{}", 30000) > 0);
	deadline = clock_mono_ms() + 5000;
	while (!atomic_load(&s.got_request) && clock_mono_ms() < deadline)
		sleep_ms(2);
	assert_int_equal(atomic_load(&s.got_request), 1);
	start = clock_mono_ms();
	jobs_free(j);
	assert_true(clock_mono_ms() - start < 500);
	srv_stop(&s, 1); /* the server saw the connection close */
	free(s.body);
}

/* --- GETs --- */

static void get_one(const char *url, uint64_t timeout_ms, struct job_result *res)
{
	struct jobs *j = jobs_new(1, 4);
	uint64_t id;

	assert_non_null(j);
	id = jobs_submit_get(j, url, timeout_ms);
	assert_true(id > 0);
	assert_int_equal(wait_job(j, id, res, 10000), 0);
	jobs_free(j);
}

static void srv_get(struct srv *s, int status, size_t answer_len, int listen_, uint64_t timeout_ms,
                    struct job_result *res)
{
	char url[64];

	srv_start(s, status, answer_len, listen_);
	srv_url(s, url, sizeof(url));
	get_one(url, timeout_ms, res);
	srv_stop(s, listen_);
}

static void test_get_keeps_the_whole_body(void **state)
{
	struct job_result res;
	struct srv s;

	/* larger than output: the whole of it is in body */
	srv_get(&s, 200, 100000, 1, 5000, &res);
	assert_int_equal(res.status, JOB_OK);
	assert_int_equal(res.http_status, 200);
	assert_int_equal(strncmp(s.head, "GET /hook HTTP/1.1\r\n", 20), 0);
	assert_non_null(strcasestr(s.head, "\r\nAccept: application/json\r\n"));
	assert_null(strcasestr(s.head, "\r\nContent-Length:"));
	assert_non_null(res.body);
	assert_int_equal(res.body_len, 100000);
	assert_int_equal(strlen(res.body), 100000);
	assert_int_equal(res.body[0], 'b');
	assert_int_equal(res.body[99999], 'b');
	assert_int_equal(strlen(res.output), JOB_OUTPUT_MAX - 1);
	job_result_release(&res);
	assert_null(res.body);
	assert_int_equal(res.body_len, 0);
	job_result_release(&res); /* twice is harmless */
	free(s.body);
}

static void test_get_non_2xx_keeps_body(void **state)
{
	struct job_result res;
	struct srv s;

	srv_get(&s, 400, 0, 1, 5000, &res);
	assert_int_equal(res.status, JOB_FAILED);
	assert_int_equal(res.http_status, 400);
	assert_string_equal(res.error, "answered 400");
	assert_non_null(res.body);
	assert_string_equal(res.body, "ok");
	job_result_release(&res);
	free(s.body);
}

static void test_get_too_large_is_an_error(void **state)
{
	void (*old)(int) = signal(SIGPIPE, SIG_IGN); /* the server writes into a closed socket */
	struct job_result res;
	struct srv s;

	srv_get(&s, 200, JOB_BODY_MAX + 1, 1, 5000, &res);
	signal(SIGPIPE, old);
	assert_int_equal(res.status, JOB_ERROR);
	assert_null(res.body);
	assert_int_equal(res.body_len, 0);
	assert_string_equal(res.error, "the response is larger than 262144 bytes; abandoned");
	free(s.body);

	/* exactly the cap is fine */
	srv_get(&s, 200, JOB_BODY_MAX, 1, 5000, &res);
	assert_int_equal(res.status, JOB_OK);
	assert_int_equal(res.body_len, JOB_BODY_MAX);
	job_result_release(&res);
	free(s.body);
}

static void test_get_refused_timeout_and_bad_urls(void **state)
{
	const char *bad[] = {"ftp://127.0.0.1/x", "file:///etc/passwd", ""};
	struct job_result res;
	struct srv s;

	srv_get(&s, 200, 0, 0, 5000, &res);
	assert_int_equal(res.status, JOB_ERROR);
	assert_null(res.body);
	assert_string_equal(res.error, "could not get: Couldn't connect to server");

	srv_get(&s, 0, 0, 1, 200, &res);
	assert_int_equal(res.status, JOB_TIMEOUT);
	assert_null(res.body);
	assert_string_equal(res.error, "did not finish within 200 ms; abandoned");
	free(s.body);

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		get_one(bad[i], 1000, &res);
		assert_int_equal(res.status, JOB_ERROR);
		assert_string_equal(res.error, "only http:// and https:// URLs can be fetched");
	}
}

static void test_detached_get_frees_its_body(void **state)
{
	struct jobs *j = jobs_new(1, 4);
	struct job_result res;
	struct srv s;
	char url[64];
	uint64_t id;

	assert_non_null(j);
	srv_start(&s, 200, 5000, 1);
	srv_url(&s, url, sizeof(url));
	id = jobs_submit_get(j, url, 5000);
	assert_true(id > 0);
	jobs_detach(j, id);
	srv_stop(&s, 1);
	assert_int_equal(jobs_poll(j, id, &res), -ENOENT);
	jobs_free(j); /* leak checkers see the body freed */
	free(s.body);
}

static void test_exec_stdout_only(void **state)
{
	const char *const argv[] = {"/bin/sh", "-c", "echo 0.25; echo warning >&2", NULL};
	struct jobs *j = jobs_new(1, 4);
	struct job_result res;
	uint64_t id;

	assert_non_null(j);
	id = jobs_submit_exec_stdout(j, argv, 5000);
	assert_true(id > 0);
	assert_int_equal(wait_job(j, id, &res, 10000), 0);
	assert_int_equal(res.status, JOB_OK);
	assert_string_equal(res.output, "0.25\n");
	assert_null(res.body);
	jobs_free(j);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_exec_ok_captures_output),
	    cmocka_unit_test(test_exec_nonzero_exit),
	    cmocka_unit_test(test_exec_killed_by_signal),
	    cmocka_unit_test(test_exec_timeout_kills_group),
	    cmocka_unit_test(test_exec_missing_binary),
	    cmocka_unit_test(test_exec_output_capped_and_drained),
	    cmocka_unit_test(test_exec_child_gets_clean_mask_and_no_fds),
	    cmocka_unit_test(test_workers_block_signals),
	    cmocka_unit_test(test_queue_full_and_ids),
	    cmocka_unit_test(test_poll_unknown_and_twice),
	    cmocka_unit_test(test_detach),
	    cmocka_unit_test(test_free_with_running_job),
	    cmocka_unit_test(test_new_rejects_bad_sizes),
	    cmocka_unit_test(test_status_names),
	    cmocka_unit_test(test_post_ok_sends_json),
	    cmocka_unit_test(test_post_non_2xx_is_failed),
	    cmocka_unit_test(test_post_large_body_capped_answer),
	    cmocka_unit_test(test_post_connection_refused),
	    cmocka_unit_test(test_post_silent_server_times_out),
	    cmocka_unit_test(test_post_only_http),
	    cmocka_unit_test(test_free_abandons_running_post),
	    cmocka_unit_test(test_get_keeps_the_whole_body),
	    cmocka_unit_test(test_get_non_2xx_keeps_body),
	    cmocka_unit_test(test_get_too_large_is_an_error),
	    cmocka_unit_test(test_get_refused_timeout_and_bad_urls),
	    cmocka_unit_test(test_detached_get_frees_its_body),
	    cmocka_unit_test(test_exec_stdout_only),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
