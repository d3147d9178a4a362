/*
 * transport.c - the plain TCP transports: read(2)/writev(2) on the fd, or
 * the thread's io_uring (core/uring.h).
 */
#include "net/transport.h"

#include "core/uring.h"

#include <errno.h>
#include <sys/epoll.h>
#include <unistd.h>

static ssize_t plain_read(struct transport *t, void *buf, size_t len)
{
	ssize_t n;

	do
		n = read(t->fd, buf, len);
	while (n == -1 && errno == EINTR);
	if (n == -1 && errno == EAGAIN)
		t->want = EPOLLIN;
	return n;
}

static ssize_t plain_writev(struct transport *t, const struct iovec *iov, int n)
{
	ssize_t w;

	do
		w = writev(t->fd, iov, n);
	while (w == -1 && errno == EINTR);
	if (w == -1 && errno == EAGAIN)
		t->want = EPOLLOUT;
	return w;
}

static int plain_handshake(struct transport *t)
{
	return 0;
}

static void plain_shutdown(struct transport *t)
{
}

static void plain_free(struct transport *t)
{
}

const struct transport_ops transport_plain_ops = {
    plain_read, plain_writev, plain_handshake, plain_shutdown, plain_free,
};

void transport_plain_init(struct transport *t, int fd)
{
	t->ops = &transport_plain_ops;
	t->fd = fd;
	t->impl = NULL;
	t->want = 0;
}

ssize_t transport_write(struct transport *t, const void *p, size_t len)
{
	struct iovec iov = {.iov_base = (void *)p, .iov_len = len};

	return t->ops->writev(t, &iov, 1);
}

void transport_release(struct transport *t, int orderly)
{
	if (!t->ops)
		return;
	if (orderly)
		t->ops->shutdown(t);
	t->ops->free(t);
	t->ops = NULL;
	t->impl = NULL;
}

/* ---- plain TCP on the thread's io_uring (core/uring.h) ---- */

static ssize_t uring_t_read(struct transport *t, void *buf, size_t len)
{
	ssize_t n = uring_conn_read(t->impl, buf, len);

	if (n == -1 && errno == EAGAIN)
		t->want = EPOLLIN;
	return n;
}

static ssize_t uring_t_writev(struct transport *t, const struct iovec *iov, int n)
{
	ssize_t w = uring_conn_writev(t->impl, iov, n);

	if (w == -1 && errno == EAGAIN)
		t->want = EPOLLOUT;
	return w;
}

static void uring_t_shutdown(struct transport *t)
{
	uring_conn_shutdown(t->impl);
}

static void uring_t_free(struct transport *t)
{
	uring_conn_close(t->impl);
}

const struct transport_ops transport_uring_ops = {
    uring_t_read, uring_t_writev, plain_handshake, uring_t_shutdown, uring_t_free,
};

int transport_uring_init(struct transport *t, int fd)
{
	struct uring *r = uring_current();
	struct uring_conn *c;

	if (!r)
		return -ENOTSUP;
	c = uring_conn_new(r, fd);
	if (!c)
		return -ENOMEM;
	t->ops = &transport_uring_ops;
	t->fd = fd;
	t->impl = c;
	t->want = 0;
	return 0;
}
