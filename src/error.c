/*
 * error.c -- presence_strerror() and presence_err_name(): one table (the
 * PRESENCE_ERRNO_MAP X-macro in presence.h) for the project's own codes,
 * strerror() for negative errno values.
 */
#include "internal.h"

#include <string.h>

const char *presence_strerror(int err)
{
    switch (err) {
#define XX(name, val, msg) \
    case val:              \
        return msg;
        PRESENCE_ERRNO_MAP(XX)
#undef XX
    default:
        break;
    }
    if (err >= 0)
        return "success";
    if (err > -4096)
        return strerror(-err); /* glibc: a static string, never NULL */
    return "unknown error";
}

const char *presence_err_name(int err)
{
    switch (err) {
#define XX(name, val, msg) \
    case val:              \
        return "PRESENCE_" #name;
        PRESENCE_ERRNO_MAP(XX)
#undef XX
    default:
        break;
    }
    if (err >= 0)
        return "OK";
    const char *n = err > -4096 ? strerrorname_np(-err) : NULL;
    return n ? n : "UNKNOWN";
}
