// ThreadSanitizer builds only (POSTERN_TSAN): libuv closes descriptors with
// syscall(SYS_close, fd) (uv__close_nocancel), which TSan does not intercept
// (google/sanitizers#1376). It then takes the next thread to get the same descriptor
// number (a dup, an accept, an open) for a race with the last use of the closed one: a
// false report that CI met once, between an admin connection closed on the main thread
// and a worker's dup(). Defined in the executable, this syscall() is the one libuv calls;
// it turns SYS_close into close(), which TSan sees, and passes everything else on.
#include <dlfcn.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdarg>

extern "C" long syscall(long number, ...) {
  va_list ap;
  va_start(ap, number);
  long a[6];
  for (long& arg : a) arg = va_arg(ap, long);
  va_end(ap);
  if (number == SYS_close) return close(static_cast<int>(a[0]));
  using Real = long (*)(long, ...);
  static const Real real = reinterpret_cast<Real>(dlsym(RTLD_NEXT, "syscall"));
  return real(number, a[0], a[1], a[2], a[3], a[4], a[5]);
}
