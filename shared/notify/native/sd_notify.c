/*
 * certfleet's sd_notify transport: the three system calls Node's core cannot make
 * (an AF_UNIX SOCK_DGRAM socket, sendto, recvmsg with the sender's credentials).
 * Policy (what to send, when, the watchdog) lives in ../index.ts; this file only moves
 * bytes. Node-API (ABI-stable): one build works across Node majors.
 *
 * Every function returns a negative errno instead of throwing, so the TypeScript side
 * turns failures into CertfleetErrors with stable codes.
 */
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <node_api.h>

#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define CHECK(call)                                                           \
  do {                                                                        \
    if ((call) != napi_ok) return NULL;                                       \
  } while (0)

static napi_value make_int(napi_env env, int v) {
  napi_value out;
  if (napi_create_int32(env, v, &out) != napi_ok) return NULL;
  return out;
}

/* address: the raw sun_path bytes (a leading NUL for an abstract name; a path carries
 * its own trailing NUL). The length is part of an abstract name, so it is passed
 * exactly, never sizeof(struct sockaddr_un). */
static int to_sockaddr(napi_env env, napi_value buf, struct sockaddr_un *sa, socklen_t *len) {
  void *data;
  size_t n;
  if (napi_get_buffer_info(env, buf, &data, &n) != napi_ok) return -EINVAL;
  if (n == 0 || n > sizeof(sa->sun_path)) return -ENAMETOOLONG;
  memset(sa, 0, sizeof(*sa));
  sa->sun_family = AF_UNIX;
  memcpy(sa->sun_path, data, n);
  *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
  return 0;
}

/* socket() -> fd | -errno. Non-blocking: a full queue is an error, never a stall. */
static napi_value js_socket(napi_env env, napi_callback_info info) {
  (void)info;
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  return make_int(env, fd < 0 ? -errno : fd);
}

/* sendto(fd, address, data) -> bytes sent | -errno */
static napi_value js_sendto(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  int32_t fd;
  void *data;
  size_t n;
  struct sockaddr_un sa;
  socklen_t len;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 3) return make_int(env, -EINVAL);
  CHECK(napi_get_value_int32(env, argv[0], &fd));
  int r = to_sockaddr(env, argv[1], &sa, &len);
  if (r < 0) return make_int(env, r);
  CHECK(napi_get_buffer_info(env, argv[2], &data, &n));
  ssize_t sent;
  do sent = sendto(fd, data, n, MSG_NOSIGNAL, (struct sockaddr *)&sa, len);
  while (sent < 0 && errno == EINTR);
  return make_int(env, sent < 0 ? -errno : (int)sent);
}

/* bind(fd, address) -> 0 | -errno; also asks for the senders' credentials (what
 * systemd does, so a test can see which process sent a datagram). */
static napi_value js_bind(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t fd;
  struct sockaddr_un sa;
  socklen_t len;
  int one = 1;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2) return make_int(env, -EINVAL);
  CHECK(napi_get_value_int32(env, argv[0], &fd));
  int r = to_sockaddr(env, argv[1], &sa, &len);
  if (r < 0) return make_int(env, r);
  if (setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) < 0) return make_int(env, -errno);
  if (bind(fd, (struct sockaddr *)&sa, len) < 0) return make_int(env, -errno);
  return make_int(env, 0);
}

/* recv(fd) -> { data: Buffer, pid: number } | -errno (-EAGAIN: nothing queued).
 * pid is 0 when the kernel attached no credentials. */
static napi_value js_recv(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  char buf[4096];
  union {
    struct cmsghdr align;
    char space[CMSG_SPACE(sizeof(struct ucred))];
  } control;
  struct iovec iov = { buf, sizeof(buf) };
  struct msghdr msg;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1) return make_int(env, -EINVAL);
  CHECK(napi_get_value_int32(env, argv[0], &fd));
  memset(&msg, 0, sizeof(msg));
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.space;
  msg.msg_controllen = sizeof(control.space);
  ssize_t n;
  do n = recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0) return make_int(env, -errno);
  int pid = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
      struct ucred cred;
      memcpy(&cred, CMSG_DATA(c), sizeof(cred));
      pid = cred.pid;
    }
  }
  napi_value out, data, pidv;
  CHECK(napi_create_object(env, &out));
  CHECK(napi_create_buffer_copy(env, (size_t)n, buf, NULL, &data));
  CHECK(napi_create_int32(env, pid, &pidv));
  CHECK(napi_set_named_property(env, out, "data", data));
  CHECK(napi_set_named_property(env, out, "pid", pidv));
  return out;
}

/* close(fd) -> 0 | -errno */
static napi_value js_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1) return make_int(env, -EINVAL);
  CHECK(napi_get_value_int32(env, argv[0], &fd));
  return make_int(env, close(fd) < 0 ? -errno : 0);
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    { "socket", NULL, js_socket, NULL, NULL, NULL, napi_enumerable, NULL },
    { "sendto", NULL, js_sendto, NULL, NULL, NULL, napi_enumerable, NULL },
    { "bind", NULL, js_bind, NULL, NULL, NULL, napi_enumerable, NULL },
    { "recv", NULL, js_recv, NULL, NULL, NULL, napi_enumerable, NULL },
    { "close", NULL, js_close, NULL, NULL, NULL, napi_enumerable, NULL },
  };
  CHECK(napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
