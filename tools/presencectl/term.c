/*
 * term.c -- presencectl: the terminal of an interactive view (`top`), with plain
 * termios and ANSI sequences, no curses. Entering: stdin in raw mode (no echo,
 * no line buffering, ISIG kept so Ctrl-C still sends SIGINT), the alternate
 * screen, the cursor hidden. Leaving restores all three; an atexit handler does
 * it too, so an exit from anywhere (out of memory) never leaves the terminal
 * broken. A SIGKILL cannot be helped (`reset` repairs the terminal then).
 */
#include "ctl.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

static struct termios saved;
static bool active, atexit_done;

#define ALT_SCREEN_ON  "\033[?1049h\033[?25l" /* alternate screen, cursor hidden */
#define ALT_SCREEN_OFF "\033[?25h\033[?1049l"

void ctl_term_leave(void)
{
    if (!active)
        return;
    active = false;
    fputs(ALT_SCREEN_OFF, stdout);
    fflush(stdout);
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
}

static void leave_at_exit(void)
{
    ctl_term_leave();
}

bool ctl_term_enter(void)
{
    if (active)
        return true;
    if (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO) || tcgetattr(STDIN_FILENO, &saved) != 0)
        return false;
    struct termios raw = saved;
    raw.c_lflag &= ~(tcflag_t) (ICANON | ECHO);
    raw.c_cc[VMIN] = 1;
    raw.c_cc[VTIME] = 0;
    if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &raw) != 0)
        return false;
    if (!atexit_done) {
        atexit(leave_at_exit);
        atexit_done = true;
    }
    active = true;
    fputs(ALT_SCREEN_ON, stdout);
    fflush(stdout);
    return true;
}

int ctl_term_key(unsigned ms)
{
    struct pollfd pfd = {STDIN_FILENO, POLLIN, 0};
    if (poll(&pfd, 1, (int) ms) <= 0) /* timeout, or EINTR: a signal to look at */
        return -1;
    unsigned char ch;
    if (!(pfd.revents & POLLIN) || read(STDIN_FILENO, &ch, 1) != 1) {
        ctl_live_sleep_ms(ms); /* hang-up or EOF: no input any more, just wait */
        return -1;
    }
    return ch;
}

void ctl_term_size(unsigned *rows, unsigned *cols)
{
    struct winsize ws;
    *rows = 24;
    *cols = 80;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0 && ws.ws_col > 0) {
        *rows = ws.ws_row;
        *cols = ws.ws_col;
    }
}
