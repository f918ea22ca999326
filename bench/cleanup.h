/*
 * cleanup.h -- presence-bench: what the parent must undo when it is interrupted
 * (SIGINT, SIGTERM, SIGHUP): worker processes and the redis server to kill, shm
 * segments and temporary files to remove. The signal handler does only
 * async-signal-safe work, then re-raises the signal. Registering is done by the
 * parent only; worker processes call cleanup_forget_all() right after fork().
 */
#ifndef BENCH_CLEANUP_H
#define BENCH_CLEANUP_H

#include <sys/types.h>

/** Installs the handlers (once, in the parent). */
void cleanup_install(void);
/** Called in a child after fork(): restores default signal actions, forgets everything. */
void cleanup_forget_all(void);

void cleanup_add_pid(pid_t pid);
void cleanup_del_pid(pid_t pid);
/** A POSIX shm name to shm_unlink(). */
void cleanup_add_shm(const char *name);
void cleanup_del_shm(const char *name);
/** A file (or, with is_dir, an empty directory) to remove. */
void cleanup_add_path(const char *path, int is_dir);
void cleanup_del_path(const char *path);

#endif /* BENCH_CLEANUP_H */
