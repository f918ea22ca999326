/*
 * main.c -- presencectl, the inspector and operator tool of shm-presence: every
 * query and operation of the registry from a shell.
 *
 *   presencectl [-s SEGMENT] COMMAND [ARGS] [--json]
 *
 * This file owns the global options (-s, --json, --help, --version), the table
 * of commands, `presencectl help [COMMAND]` and the dispatch. Each command lives
 * in a cmd_*.c file with its own help text. Exit status: 0 ok, 1 error (message
 * on stderr), 2 usage.
 */
#include "ctl.h"

#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmd_help(struct ctl *c, int argc, char **argv);

static const struct ctl_cmd help_cmd = {
    "help", cmd_help, "[COMMAND]", "Show the commands, or the help of one command", "",
};

/* In the order `presencectl --help` lists them. */
static const struct ctl_cmd *const commands[] = {
    &ctl_cmd_create,    &ctl_cmd_destroy,   &ctl_cmd_stat,        &ctl_cmd_rooms,
    &ctl_cmd_here_now,  &ctl_cmd_where_now, &ctl_cmd_users,       &ctl_cmd_get_state,
    &ctl_cmd_set_state, &ctl_cmd_join,      &ctl_cmd_leave,       &ctl_cmd_touch,
    &ctl_cmd_leave_all, &ctl_cmd_prune,     &ctl_cmd_prune_rooms, &ctl_cmd_group,
    &ctl_cmd_check,     &ctl_cmd_dump,      &ctl_cmd_watch,       &ctl_cmd_top,
    &ctl_cmd_procs,     &help_cmd,
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

static const struct ctl_cmd *find_command(const char *name)
{
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(commands[i]->name, name) == 0)
            return commands[i];
    return NULL;
}

static void main_usage(FILE *out)
{
    fprintf(out,
            "Usage: %s [-s SEGMENT] COMMAND [ARGS] [--json]\n"
            "Try '%s --help' for the list of commands.\n",
            CTL_PROG, CTL_PROG);
}

static void main_help(void)
{
    printf("Usage: %s [-s SEGMENT] COMMAND [ARGS] [--json]\n"
           "Inspect and operate a shm-presence registry (a POSIX shared-memory segment).\n"
           "Queries attach the segment read-only and never write to it; the other\n"
           "commands change it while other processes keep using it.\n"
           "\n"
           "Global options:\n"
           "  -s, --segment NAME  segment to use (default: $PRESENCE_SEGMENT, else 'default')\n"
           "      --json          JSON output (also accepted after the command)\n"
           "  -h, --help          this help ('%s COMMAND --help' for one command)\n"
           "  -V, --version       version of %s and of libpresence\n"
           "\n"
           "Commands:\n",
           CTL_PROG, CTL_PROG, CTL_PROG);
    for (size_t i = 0; i < NCOMMANDS; i++)
        printf("  %-12s %s\n", commands[i]->name, commands[i]->summary);
    printf("\n"
           "Output: aligned tables on a terminal; tab-separated lines without a header\n"
           "when piped; --json for JSON (here-now has PubNub's shape).\n"
           "Exit status: 0 ok, 1 error (message on stderr), 2 usage.\n"
           "\n"
           "Examples:\n"
           "  %s create --rooms 64K --presences 1M --arena 256M\n"
           "  %s join lobby conn-1 --user alice --timeout 30\n"
           "  %s here-now lobby -g public --state --json\n"
           "  %s -s chat rooms --prefix game.\n"
           "  %s set-state conn-1 '{\"typing\":true}' lobby\n"
           "  %s prune --max-age 90\n"
           "  %s check && echo consistent\n"
           "  PRESENCE_SEGMENT=chat %s dump > registry.json\n"
           "  %s watch lobby game.1 --json | jq .type\n"
           "  %s top --interval 500\n",
           CTL_PROG, CTL_PROG, CTL_PROG, CTL_PROG, CTL_PROG, CTL_PROG, CTL_PROG, CTL_PROG, CTL_PROG,
           CTL_PROG);
}

static int cmd_help(struct ctl *c, int argc, char **argv)
{
    static const struct option longopts[] = {
        CTL_COMMON_LONGOPTS,
    };
    if (ctl_getopt(c, argc, argv, "", longopts) != -1)
        return c->stop;
    if (argc - optind > 1)
        return ctl_usage_error(c, "expected at most one COMMAND");
    if (argc == optind) {
        main_help();
        return CTL_OK;
    }
    const struct ctl_cmd *cmd = find_command(argv[optind]);
    if (!cmd)
        return ctl_usage_error(c, "unknown command '%s'", argv[optind]);
    ctl_print_help(c, cmd);
    return CTL_OK;
}

int main(int argc, char **argv)
{
    setlocale(LC_CTYPE, ""); /* character widths for table alignment only */
    struct ctl c = {0};
    const char *env = getenv("PRESENCE_SEGMENT");
    c.segment = env && *env ? env : "default";
    c.cmd_name = CTL_PROG;
    ctl_out_init(&c);

    static const struct option longopts[] = {
        {"segment", required_argument, NULL, 's'},
        {"json", no_argument, NULL, CTL_OPT_JSON},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    opterr = 0;
    int o;
    /* '+': stop at the command; its options are parsed by the command. */
    while ((o = getopt_long(argc, argv, "+:s:hV", longopts, NULL)) != -1) {
        switch (o) {
        case 's':
            c.segment = optarg;
            break;
        case CTL_OPT_JSON:
            c.json = true;
            break;
        case 'h':
            main_help();
            return ctl_out_finish(CTL_OK);
        case 'V':
            printf("%s %d.%d.%d (libpresence %s)\n", CTL_PROG, PRESENCE_VERSION_MAJOR,
                   PRESENCE_VERSION_MINOR, PRESENCE_VERSION_PATCH, presence_version_string());
            return ctl_out_finish(CTL_OK);
        case ':':
            fprintf(stderr, "%s: option '%s' requires an argument\n", CTL_PROG, argv[optind - 1]);
            main_usage(stderr);
            return CTL_USAGE;
        default:
            if (optopt > ' ' && optopt < 0x7f)
                fprintf(stderr, "%s: invalid option -- '%c'\n", CTL_PROG, optopt);
            else
                fprintf(stderr, "%s: unrecognized option '%s'\n", CTL_PROG, argv[optind - 1]);
            main_usage(stderr);
            return CTL_USAGE;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "%s: no command given\n", CTL_PROG);
        main_usage(stderr);
        return CTL_USAGE;
    }
    if (!*c.segment) {
        fprintf(stderr, "%s: the segment name is empty\n", CTL_PROG);
        return CTL_USAGE;
    }
    const struct ctl_cmd *cmd = find_command(argv[optind]);
    if (!cmd) {
        fprintf(stderr, "%s: unknown command '%s'\n", CTL_PROG, argv[optind]);
        main_usage(stderr);
        return CTL_USAGE;
    }
    c.cmd = cmd;
    c.cmd_name = cmd->name;
    int cargc = argc - optind;
    char **cargv = argv + optind;
    optind = 0; /* glibc: re-initialise getopt for the command's own argv */
    return ctl_out_finish(cmd->run(&c, cargc, cargv));
}
