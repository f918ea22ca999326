/*
 * atomic.h -- the atomics and barriers used on shared memory.
 *
 * In shared memory we use liburcu's address-independent primitives
 * (urcu/uatomic.h, urcu/arch.h, urcu/system.h): inline lock-prefixed
 * instructions with no library state, so they are valid across processes.
 * liburcu's *grace periods* are not used for shared objects (they cover one
 * process only); see epoch.c.
 *
 * ThreadSanitizer cannot see liburcu's inline assembly, so a TSan build maps the
 * same operations onto the compiler's __atomic builtins (sequentially
 * consistent, at least as strong as the liburcu forms) so that TSan sees them.
 */
#ifndef PR_ATOMIC_H
#define PR_ATOMIC_H

#include <stdint.h>

#if defined(__SANITIZE_THREAD__)
#    define PR_TSAN 1
#elif defined(__has_feature)
#    if __has_feature(thread_sanitizer)
#        define PR_TSAN 1
#    endif
#endif

#ifdef PR_TSAN
#    define pr_load(p)         __atomic_load_n((p), __ATOMIC_SEQ_CST)
#    define pr_store(p, v)     __atomic_store_n((p), (v), __ATOMIC_SEQ_CST)
#    define pr_xchg(p, v)      __atomic_exchange_n((p), (v), __ATOMIC_SEQ_CST)
#    define pr_fetch_add(p, v) __atomic_fetch_add((p), (v), __ATOMIC_SEQ_CST)
#    define pr_fetch_or(p, v)  __atomic_fetch_or((p), (v), __ATOMIC_SEQ_CST)
#    define pr_fetch_and(p, v) __atomic_fetch_and((p), (v), __ATOMIC_SEQ_CST)
#    define pr_smp_mb()        __atomic_thread_fence(__ATOMIC_SEQ_CST)
#    define pr_smp_wmb()       __atomic_thread_fence(__ATOMIC_RELEASE)
#    define pr_smp_rmb()       __atomic_thread_fence(__ATOMIC_ACQUIRE)
#    define pr_barrier()       __atomic_signal_fence(__ATOMIC_SEQ_CST)
/* Returns the value found (equal to @old on success), like uatomic_cmpxchg. */
#    define pr_cmpxchg(p, old, new_)                                                        \
        __extension__({                                                                     \
            __typeof__(*(p)) pr_cx_expected_ = (old);                                       \
            __atomic_compare_exchange_n((p), &pr_cx_expected_, (new_), 0, __ATOMIC_SEQ_CST, \
                                        __ATOMIC_SEQ_CST);                                  \
            pr_cx_expected_;                                                                \
        })
#else
#    include <urcu/arch.h>
#    include <urcu/system.h>
#    include <urcu/uatomic.h>
#    define pr_load(p) uatomic_read(p)
/* Store with release semantics: a compiler barrier orders earlier stores (x86 TSO). */
#    define pr_store(p, v)         \
        do {                       \
            cmm_smp_wmb();         \
            uatomic_set((p), (v)); \
        } while (0)
#    define pr_xchg(p, v)            __extension__({ uatomic_xchg((p), (v)); })
#    define pr_fetch_add(p, v)       __extension__({ uatomic_add_return((p), (v)) - (v); })
#    define pr_fetch_or(p, v)        uatomic_or((p), (v))
#    define pr_fetch_and(p, v)       uatomic_and((p), (v))
#    define pr_smp_mb()              cmm_smp_mb()
/* Store-store and load-load order (a seqlock's two sides): compiler barriers on
 * x86 (TSO), real fences where the hardware reorders. */
#    define pr_smp_wmb()             cmm_smp_wmb()
#    define pr_smp_rmb()             cmm_smp_rmb()
#    define pr_barrier()             cmm_barrier()
#    define pr_cmpxchg(p, old, new_) uatomic_cmpxchg((p), (old), (new_))
#endif

/* A full barrier from a locked add to the stack (what Linux's smp_mb() does on
 * x86-64): a few cycles where mfence costs tens. */
#ifdef PR_TSAN
#    define pr_smp_mb_cheap() __atomic_thread_fence(__ATOMIC_SEQ_CST)
#elif defined(__x86_64__)
#    define pr_smp_mb_cheap() __asm__ volatile("lock; addl $0,-8(%%rsp)" ::: "memory", "cc")
#else
#    define pr_smp_mb_cheap() pr_smp_mb()
#endif

/* A spin-wait hint (pause). */
#if defined(__x86_64__) || defined(__i386__)
#    define pr_cpu_relax() __builtin_ia32_pause()
#else
#    define pr_cpu_relax() __asm__ volatile("" ::: "memory")
#endif

/* A hint that the line at @p is about to be written (x86: prefetchw, a no-op
 * on processors without it). */
#if defined(__x86_64__)
#    define pr_prefetch_write(p) __asm__ volatile("prefetchw %0" ::"m"(*(const char *) (p)))
#else
#    define pr_prefetch_write(p) __builtin_prefetch((p), 1)
#endif

#define pr_cas(p, old, new_) __extension__({ pr_cmpxchg((p), (old), (new_)) == (old); })

#endif /* PR_ATOMIC_H */
