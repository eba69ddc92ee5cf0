/* An LD_PRELOAD shim for the spool's storage tests: it holds or fails the real calls on
 * the test's signal, so a test can see what the relay does while a sync has not returned
 * or after a write and its truncation failed. Only regular files are touched (sockets and
 * pipes pass through).
 *
 *   POSTERN_SHIM_SYNC_GATE=DIR   fdatasync() creates DIR/waiting, then waits until
 *                                DIR/open exists (polled every 10 ms, at most 60 s)
 *   POSTERN_SHIM_FAIL=FILE       while FILE exists, writev() and ftruncate() on regular
 *                                files fail with EIO
 *   POSTERN_SHIM_MAP_GATE=DIR    mmap() of a regular file (a segment being replayed)
 *                                creates DIR/waiting, then waits until DIR/open exists
 *   POSTERN_SHIM_NODELAY_GATE=DIR  once DIR/armed exists, setsockopt(TCP_NODELAY), which a
 *                                session makes on its worker's loop as it starts, does the
 *                                same: that loop is stuck until DIR/open exists
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static int exists(const char* path) {
  struct stat st;
  return stat(path, &st) == 0;
}

static int is_regular(int fd) {
  struct stat st;
  return fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
}

static int failing(int fd) {
  const char* flag = getenv("POSTERN_SHIM_FAIL");
  return flag != NULL && is_regular(fd) && exists(flag);
}

/* Creates gate/waiting, then waits until gate/open exists (at most 60 s). */
static void hold(const char* gate) {
  char waiting[4096], open_path[4096];
  snprintf(waiting, sizeof waiting, "%s/waiting", gate);
  snprintf(open_path, sizeof open_path, "%s/open", gate);
  int w = open(waiting, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  if (w >= 0) close(w);
  struct timespec tick = {0, 10 * 1000 * 1000};
  for (int i = 0; i < 6000 && !exists(open_path); ++i) nanosleep(&tick, NULL);
}

int fdatasync(int fd) {
  static int (*real)(int) = NULL;
  if (real == NULL) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
  const char* gate = getenv("POSTERN_SHIM_SYNC_GATE");
  if (gate != NULL) hold(gate);
  return real(fd);
}

void* mmap(void* addr, size_t len, int prot, int flags, int fd, off_t off) {
  static void* (*real)(void*, size_t, int, int, int, off_t) = NULL;
  if (real == NULL) real = (void* (*)(void*, size_t, int, int, int, off_t))dlsym(RTLD_NEXT, "mmap");
  const char* gate = getenv("POSTERN_SHIM_MAP_GATE");
  if (gate != NULL && fd >= 0 && is_regular(fd)) hold(gate);
  return real(addr, len, prot, flags, fd, off);
}

ssize_t writev(int fd, const struct iovec* iov, int n) {
  static ssize_t (*real)(int, const struct iovec*, int) = NULL;
  if (real == NULL) real = (ssize_t(*)(int, const struct iovec*, int))dlsym(RTLD_NEXT, "writev");
  if (failing(fd)) {
    errno = EIO;
    return -1;
  }
  return real(fd, iov, n);
}

int ftruncate(int fd, off_t length) {
  static int (*real)(int, off_t) = NULL;
  if (real == NULL) real = (int (*)(int, off_t))dlsym(RTLD_NEXT, "ftruncate");
  if (failing(fd)) {
    errno = EIO;
    return -1;
  }
  return real(fd, length);
}

int setsockopt(int fd, int level, int name, const void* value, socklen_t len) {
  static int (*real)(int, int, int, const void*, socklen_t) = NULL;
  if (real == NULL) real = (int (*)(int, int, int, const void*, socklen_t))dlsym(RTLD_NEXT, "setsockopt");
  const char* gate = getenv("POSTERN_SHIM_NODELAY_GATE");
  if (gate != NULL && level == IPPROTO_TCP && name == TCP_NODELAY) {
    char armed[4096];
    snprintf(armed, sizeof armed, "%s/armed", gate);
    if (exists(armed)) hold(gate);
  }
  return real(fd, level, name, value, len);
}
