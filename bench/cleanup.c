/*
 * cleanup.c -- presence-bench: undoes the parent's side effects when it is interrupted.
 *
 * Fixed-size tables (no allocation) so that the handler can walk them safely; the
 * handler kills registered processes with SIGTERM, unlinks shm names, removes files
 * and then directories, restores the default action and re-raises the signal.
 */
#include "cleanup.h"

#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

enum { MAX_PIDS = 1100, MAX_NAMES = 16, NAME_CAP = 256 };

static pid_t g_owner;
static volatile pid_t g_pids[MAX_PIDS];
static char g_shm[MAX_NAMES][NAME_CAP];
static char g_paths[MAX_NAMES][NAME_CAP];
static int g_path_is_dir[MAX_NAMES];

static void put_name(char tab[][NAME_CAP], const char *name)
{
    if (strlen(name) >= NAME_CAP)
        return;
    for (int i = 0; i < MAX_NAMES; i++) {
        if (tab[i][0] == '\0') {
            memcpy(tab[i], name, strlen(name) + 1);
            return;
        }
    }
}

static int del_name(char tab[][NAME_CAP], const char *name)
{
    for (int i = 0; i < MAX_NAMES; i++) {
        if (tab[i][0] != '\0' && strcmp(tab[i], name) == 0) {
            tab[i][0] = '\0';
            return i;
        }
    }
    return -1;
}

static void on_signal(int sig)
{
    if (getpid() == g_owner) {
        for (int i = 0; i < MAX_PIDS; i++)
            if (g_pids[i] > 0)
                kill(g_pids[i], SIGTERM);
        for (int i = 0; i < MAX_NAMES; i++)
            if (g_shm[i][0] != '\0')
                shm_unlink(g_shm[i]);
        for (int pass = 0; pass < 2; pass++)
            for (int i = 0; i < MAX_NAMES; i++)
                if (g_paths[i][0] != '\0' && g_path_is_dir[i] == pass)
                    (pass ? rmdir : unlink)(g_paths[i]);
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

void cleanup_install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    g_owner = getpid();
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

void cleanup_forget_all(void)
{
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    signal(SIGHUP, SIG_DFL);
    g_owner = 0;
}

void cleanup_add_pid(pid_t pid)
{
    for (int i = 0; i < MAX_PIDS; i++) {
        if (g_pids[i] == 0) {
            g_pids[i] = pid;
            return;
        }
    }
}

void cleanup_del_pid(pid_t pid)
{
    for (int i = 0; i < MAX_PIDS; i++)
        if (g_pids[i] == pid)
            g_pids[i] = 0;
}

void cleanup_add_shm(const char *name)
{
    put_name(g_shm, name);
}

void cleanup_del_shm(const char *name)
{
    del_name(g_shm, name);
}

void cleanup_add_path(const char *path, int is_dir)
{
    for (int i = 0; i < MAX_NAMES; i++) {
        if (g_paths[i][0] == '\0' && strlen(path) < NAME_CAP) {
            g_path_is_dir[i] = is_dir;
            memcpy(g_paths[i], path, strlen(path) + 1);
            return;
        }
    }
}

void cleanup_del_path(const char *path)
{
    del_name(g_paths, path);
}
