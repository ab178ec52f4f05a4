/* LD_PRELOAD shim for TFF's worker_binary: a bind() to the wildcard address binds to loopback instead.
 *
 * worker_binary has no flag for its listening address and serves on [::]:PORT, unauthenticated:
 * anyone on the network could run TensorFlow graphs (file reads and writes included) while a
 * simulation runs. fedbeat's local workers talk to fedbeat alone, over loopback, so it builds this
 * shim (simulation/loopback.py) and preloads it into them. Remote workers (--worker HOST:PORT)
 * are started by the operator without it, on a private network.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

int bind(int fd, const struct sockaddr *addr, socklen_t len) {
    static int (*real_bind)(int, const struct sockaddr *, socklen_t);
    if (!real_bind) real_bind = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "bind");
    if (addr && addr->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 local;
        memcpy(&local, addr, sizeof local);
        if (IN6_IS_ADDR_UNSPECIFIED(&local.sin6_addr)) {
            local.sin6_addr = in6addr_loopback;
            return real_bind(fd, (const struct sockaddr *)&local, sizeof local);
        }
    } else if (addr && addr->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        struct sockaddr_in local;
        memcpy(&local, addr, sizeof local);
        if (local.sin_addr.s_addr == htonl(INADDR_ANY)) {
            local.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            return real_bind(fd, (const struct sockaddr *)&local, sizeof local);
        }
    }
    return real_bind(fd, addr, len);
}
