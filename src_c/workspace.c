/* Large working buffers: the padded copies of the stride-1 paths.
 *
 * Fresh memory costs a page fault and a cleared page per 4 KiB, which in a
 * virtual machine can take a quarter of a call's time. So each calling thread
 * keeps its buffers between calls (two slots, since one call may need two) and
 * frees them when it exits. A buffer above PTC_WORKSPACE_KEEP bytes is not
 * kept past the call, which bounds what stays allocated. Buffers are on huge
 * pages where the system allows: the kernels read dozens of channel planes at
 * once, and 4 KiB pages would miss the TLB. */
#define _DEFAULT_SOURCE /* madvise */

#include "internal.h"

#include <pthread.h>
#include <stdlib.h>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#define PTC_WORKSPACE_SLOTS 2
#define PTC_WORKSPACE_KEEP ((size_t)256 << 20)

typedef struct {
    void *ptr[PTC_WORKSPACE_SLOTS];
    size_t size[PTC_WORKSPACE_SLOTS];
} workspace;

static pthread_key_t key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

static void workspace_free(void *data)
{
    workspace *ws = data;
    for (int i = 0; i < PTC_WORKSPACE_SLOTS; i++) free(ws->ptr[i]);
    free(ws);
}

static void make_key(void) { pthread_key_create(&key, workspace_free); }

static void *alloc_large(size_t bytes)
{
    void *ptr = NULL;
#if defined(__linux__)
    const size_t huge = (size_t)2 << 20;
    if (bytes >= huge) {
        size_t rounded = (bytes + huge - 1) / huge * huge;
        if (posix_memalign(&ptr, huge, rounded) != 0) return NULL;
        madvise(ptr, rounded, MADV_HUGEPAGE);
        return ptr;
    }
#endif
    return malloc(bytes > 0 ? bytes : 1);
}

void *ptc_workspace_acquire(int slot, size_t bytes)
{
    pthread_once(&key_once, make_key);
    workspace *ws = pthread_getspecific(key);
    if (!ws) {
        ws = calloc(1, sizeof(*ws));
        if (!ws) return NULL;
        if (pthread_setspecific(key, ws) != 0) {
            free(ws);
            return NULL;
        }
    }
    if (ws->size[slot] >= bytes && ws->ptr[slot]) return ws->ptr[slot];
    free(ws->ptr[slot]);
    ws->ptr[slot] = alloc_large(bytes);
    ws->size[slot] = ws->ptr[slot] ? bytes : 0;
    return ws->ptr[slot];
}

void ptc_workspace_release(int slot)
{
    workspace *ws = pthread_getspecific(key);
    if (ws && ws->size[slot] > PTC_WORKSPACE_KEEP) {
        free(ws->ptr[slot]);
        ws->ptr[slot] = NULL;
        ws->size[slot] = 0;
    }
}
