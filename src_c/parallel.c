/* A minimal fork-join pool: each parallel call starts its workers and joins
 * them. Tasks are claimed from an atomic counter; which thread runs a task
 * never changes what the task computes, so results do not depend on the
 * thread count. Starting threads per call costs tens of microseconds, which is
 * why small problems run on the calling thread alone (ptc_threads_for_work);
 * in exchange the pool has no global state to protect, concurrent calls from
 * many threads are independent, and fork() after a call is safe. */
#if defined(__linux__)
#define _GNU_SOURCE /* sched_getcpu, CPU_SET, pthread_*affinity_np */
#else
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#endif

#include "internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#if defined(__linux__)
#include <sched.h>
#endif

/* Where the system lets us, each worker starts on a CPU other than the
 * caller's (see place_workers). */
#if defined(__linux__) && defined(__GLIBC__)
#define PTC_PLACE_WORKERS 1
#endif

static atomic_int num_threads; /* 0: not initialised yet */

static int default_threads(void)
{
    const char *env = getenv("PYTCONV_NUM_THREADS");
    if (env && *env) {
        char *end;
        long n = strtol(env, &end, 10);
        if (*end == '\0' && n >= 1 && n <= 1024) return (int)n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n >= 1 ? (int)(n > 1024 ? 1024 : n) : 1;
}

void ptc_set_num_threads(int n)
{
    if (n < 1) n = default_threads();
    if (n > 1024) n = 1024;
    atomic_store(&num_threads, n);
}

int ptc_get_num_threads(void)
{
    int n = atomic_load(&num_threads);
    if (n == 0) {
        n = default_threads();
        atomic_store(&num_threads, n);
    }
    return n;
}

int ptc_threads_for_work(double flops)
{
    /* Below ~4 MFLOP (well under a millisecond) a second thread costs more
     * than it saves. */
    double useful = flops / 4e6;
    int n = ptc_get_num_threads();
    if (useful < n) n = useful < 1 ? 1 : (int)useful;
    return n;
}

struct ptc_parallel {
    ptc_task_fn fn;
    void *ctx;
    int64_t ntasks;
    atomic_llong next;
    atomic_int stop;
    atomic_int status;
    const ptc_options *opt;
    struct timespec last_poll;
};

static double seconds_since(const struct timespec *t)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t->tv_sec) + 1e-9 * (double)(now.tv_nsec - t->tv_nsec);
}

int ptc_poll(ptc_parallel *par, int thread_id)
{
    /* Only the calling thread (id 0) asks the callback: it may need the
     * caller's context (Python's signal handling happens on the main thread). */
    if (thread_id == 0 && par->opt && par->opt->should_stop &&
        seconds_since(&par->last_poll) >= 0.02) {
        clock_gettime(CLOCK_MONOTONIC, &par->last_poll);
        if (par->opt->should_stop(par->opt->should_stop_data)) {
            int expected = PTC_OK;
            atomic_compare_exchange_strong(&par->status, &expected, PTC_ERR_INTERRUPTED);
            atomic_store(&par->stop, 1);
        }
    }
    return atomic_load(&par->stop);
}

static void run_tasks(ptc_parallel *par, int thread_id)
{
    while (!ptc_poll(par, thread_id)) {
        int64_t t = atomic_fetch_add(&par->next, 1);
        if (t >= par->ntasks) break;
        ptc_status s = par->fn(par->ctx, t, thread_id, par);
        if (s != PTC_OK) {
            int expected = PTC_OK;
            atomic_compare_exchange_strong(&par->status, &expected, (int)s);
            atomic_store(&par->stop, 1);
        }
    }
}

typedef struct {
    ptc_parallel *par;
    int id;
#ifdef PTC_PLACE_WORKERS
    const cpu_set_t *allowed; /* the caller's CPUs, given back on start; NULL: not placed */
#endif
} worker_arg;

static void *worker_main(void *arg)
{
    worker_arg *w = arg;
#ifdef PTC_PLACE_WORKERS
    /* Started where place_workers put it; from here on the scheduler may move
     * it like any other thread. */
    if (w->allowed) pthread_setaffinity_np(pthread_self(), sizeof(cpu_set_t), w->allowed);
#endif
    run_tasks(w->par, w->id);
    return NULL;
}

#ifdef PTC_PLACE_WORKERS
/* Linux puts a new thread on the CPU of the thread that made it unless that
 * CPU looks busier than the others, and a caller that was idle until this
 * call does not. Then the worker shares the caller's CPU in 4 ms time slices
 * while another CPU idles, and a call of a few milliseconds runs at one
 * core's speed (perf sched on the 2-core machine: stride2 float32 forward
 * called every 30 ms, 88 GFLOP/s against 137 back to back). So the workers
 * start on the caller's CPUs less the one it runs on, the scheduler choosing
 * among those, and take back the caller's whole set as they start. Not when
 * there are more threads than CPUs: then some must share anyway.
 * Sets *allowed to the caller's CPUs and initialises *attr to start a worker
 * on them less the caller's own; returns 0 (with *attr not initialised)
 * where the placement is left to the system. */
static int place_workers(int64_t nthreads, cpu_set_t *allowed, pthread_attr_t *attr)
{
    if (pthread_getaffinity_np(pthread_self(), sizeof(cpu_set_t), allowed) != 0) return 0;
    int here = sched_getcpu();
    if (here < 0 || !CPU_ISSET(here, allowed) || CPU_COUNT(allowed) < nthreads) return 0;
    cpu_set_t start = *allowed;
    CPU_CLR(here, &start);
    if (pthread_attr_init(attr) != 0) return 0;
    if (pthread_attr_setaffinity_np(attr, sizeof(start), &start) != 0) {
        pthread_attr_destroy(attr);
        return 0;
    }
    return 1;
}
#endif

ptc_status ptc_parallel_for(int64_t ntasks, int max_threads, ptc_task_fn fn, void *ctx,
                            const ptc_options *opt)
{
    ptc_parallel par;
    par.fn = fn;
    par.ctx = ctx;
    par.ntasks = ntasks;
    atomic_init(&par.next, 0);
    atomic_init(&par.stop, 0);
    atomic_init(&par.status, PTC_OK);
    par.opt = opt;
    clock_gettime(CLOCK_MONOTONIC, &par.last_poll);

    int64_t n = max_threads;
    if (n > 1024) n = 1024;
    if (n > ntasks) n = ntasks;
    if (n < 1) n = 1;

    pthread_t threads[1024];
    worker_arg args[1024];
    int started = 0;
#ifdef PTC_PLACE_WORKERS
    cpu_set_t allowed;
    pthread_attr_t attr;
    int placed = n > 1 && place_workers(n, &allowed, &attr);
#endif
    for (int i = 1; i < n; i++) {
        args[i].par = &par;
        args[i].id = i;
        const pthread_attr_t *start_attr = NULL;
#ifdef PTC_PLACE_WORKERS
        args[i].allowed = placed ? &allowed : NULL;
        if (placed) start_attr = &attr;
#endif
        /* A worker that cannot be placed starts unplaced; one that cannot
         * start at all leaves its share to the others. */
        if (pthread_create(&threads[started], start_attr, worker_main, &args[i]) != 0) {
            if (!start_attr) break;
#ifdef PTC_PLACE_WORKERS
            args[i].allowed = NULL;
#endif
            if (pthread_create(&threads[started], NULL, worker_main, &args[i]) != 0) break;
        }
        started++;
    }
#ifdef PTC_PLACE_WORKERS
    if (placed) pthread_attr_destroy(&attr);
#endif
    run_tasks(&par, 0);
    for (int i = 0; i < started; i++) pthread_join(threads[i], NULL);
    /* A final poll so that an interrupt during a short call is not lost. */
    if (atomic_load(&par.status) == PTC_OK && opt && opt->should_stop &&
        opt->should_stop(opt->should_stop_data))
        return PTC_ERR_INTERRUPTED;
    return (ptc_status)atomic_load(&par.status);
}
