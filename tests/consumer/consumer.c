/*
 * consumer.c -- a program outside the project that uses the installed library:
 * built by tests/consumer/run.sh through pkg-config and through find_package().
 */
#include <stdio.h>
#include <string.h>

#include <presence.h>

int main(void)
{
    presence_options_t opts;
    presence_options_init(&opts);

    const char *msg = presence_strerror(PRESENCE_EVERSION);
    if (msg == NULL || msg[0] == '\0' || opts.rooms == 0) {
        fprintf(stderr, "consumer: unexpected answers from libpresence\n");
        return 1;
    }
    printf("consumer: libpresence %s, default rooms %u, PRESENCE_EVERSION: %s\n",
           presence_version_string(), (unsigned) opts.rooms, msg);
    return 0;
}
