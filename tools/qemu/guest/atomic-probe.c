/*
 * atomic-probe: do two QEMU guests' atomic instructions exclude each other on shared memory?
 *
 *   atomic-probe DEVICE ME N
 *
 * Maps the first 2 MiB of DEVICE (a /dev/daxX.Y both guests share), raises this guest's "here"
 * flag (ME is 0 or 1), waits for the other's, then adds 1 to a shared counter N times with a
 * compare-and-swap loop (as GISMO's state words do), raises its "done" flag, waits for the
 * other's, and prints the counter. Two guests that each add N must see 2N; fewer means updates
 * were lost: the CAS was not atomic across the two QEMU processes.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

struct shared {
    uint64_t counter;
    uint64_t pad0[7];
    uint64_t here[2];
    uint64_t pad1[6];
    uint64_t done[2];
};

static int wait_flag(volatile uint64_t *flag, int seconds)
{
    time_t end = time(NULL) + seconds;
    while (__atomic_load_n(flag, __ATOMIC_ACQUIRE) == 0) {
        if (time(NULL) > end)
            return -1;
        usleep(100);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: atomic-probe DEVICE ME N\n");
        return 2;
    }
    int me = atoi(argv[2]);
    long n = atol(argv[3]);
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) {
        perror(argv[1]);
        return 1;
    }
    struct shared *s = mmap(NULL, 2 << 20, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (s == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    __atomic_store_n(&s->here[me], 1, __ATOMIC_RELEASE);
    if (wait_flag(&s->here[1 - me], 120)) {
        fprintf(stderr, "the other guest never arrived\n");
        return 1;
    }
    long retries = 0;
    for (long i = 0; i < n; i++) {
        uint64_t cur = __atomic_load_n(&s->counter, __ATOMIC_RELAXED);
        while (!__atomic_compare_exchange_n(&s->counter, &cur, cur + 1, 0, __ATOMIC_ACQ_REL,
                                            __ATOMIC_RELAXED))
            retries++;
    }
    __atomic_store_n(&s->done[me], 1, __ATOMIC_RELEASE);
    if (wait_flag(&s->done[1 - me], 300)) {
        fprintf(stderr, "the other guest never finished\n");
        return 1;
    }
    uint64_t total = __atomic_load_n(&s->counter, __ATOMIC_ACQUIRE);
    printf("GISMO-PROBE counter %llu expected %llu lost %lld cas-retries %ld\n",
           (unsigned long long)total, (unsigned long long)(2 * n),
           (long long)(2 * n) - (long long)total, retries);
    return total == (uint64_t)(2 * n) ? 0 : 3;
}
