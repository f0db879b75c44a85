#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "train/internal.h"

static volatile sig_atomic_t stop_signal = 0;
static const int SIGNALS[] = {SIGTERM, SIGUSR1, SIGINT};

static void on_signal(int signo) {
    if (stop_signal) _exit(128 + signo); /* second signal: the user means it */
    stop_signal = signo;
}

/* Installed for the rest of the process: a signal that arrives after the last step must not
 * kill a run that is writing its final outputs. A new run starts with no stop requested. */
void sp__signals_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    stop_signal = 0;
    for (int i = 0; i < 3; i++) sigaction(SIGNALS[i], &sa, NULL);
}

int sp__signals_stop_requested(void) {
    return stop_signal;
}
