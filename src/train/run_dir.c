/* A run owns its output directory: what may be in it before the run claims it, and the lock
 * that keeps a second trainer out while the run lives (docs/reliability.md, "One run per
 * directory").
 *
 * The lock is OUT/.lock, held by rank 0 for the run's life:
 *   - flock(2) on it, released by the kernel when the process dies (and, on NFS, by the
 *     server's lock recovery when a client node dies);
 *   - its content names the holder {"host", "pid", "job", "started"}, and its modification time
 *     is a heartbeat renewed every SP_LOCK_HEARTBEAT seconds by a thread. A holder on another
 *     host with a fresh heartbeat keeps the directory even when flock succeeded, which covers
 *     file systems whose flock is node-local (Lustre's localflock) or missing (then the content
 *     and heartbeat are the only lock: a lease). A holder on this host whose process is gone, or
 *     any holder silent for SP_LOCK_STALE seconds, is stale and replaced.
 *   - a normal exit empties the file, so the next run starts at once.
 * A requeued Slurm job finding its own earlier incarnation (same job id) waits up to
 * SP_LOCK_WAIT seconds for it to go. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "train/internal.h"
#include "util/path.h"

#define SP_LOCK_HEARTBEAT 15
#define SP_LOCK_STALE 120
#define SP_LOCK_WAIT 180

/* ---------------------------------------------------------------- ownership */

/* What softprompt and its job scripts put into a run directory. */
static const char *const RUN_NAMES[] = {
    "checkpoints", "best.h5", "metrics.jsonl", "config.json",       "adapter",       ".lock",
    "job.sbatch",  "logs",    "slurm-job.log", ".slurm-step-start", "sweep-row.json"};
#define N_RUN_NAMES (sizeof RUN_NAMES / sizeof RUN_NAMES[0])

static int is_run_name(const char *name) {
    for (size_t i = 0; i < N_RUN_NAMES; i++) {
        size_t n = strlen(RUN_NAMES[i]);
        if (strcmp(name, RUN_NAMES[i]) == 0) return 1;
        /* leftovers of atomic writes: best.h5.tmp.XXXXXX, .job.sbatch.XXXXXX */
        if (strncmp(name, RUN_NAMES[i], n) == 0 && strncmp(name + n, ".tmp.", 5) == 0) return 1;
    }
    return strncmp(name, ".job.sbatch.", 12) == 0;
}

typedef enum config_kind { CONFIG_NONE, CONFIG_RUN, CONFIG_MODEL, CONFIG_OTHER } config_kind;

/* What DIR/config.json is: a run's configuration (written by the trainer), a Hugging Face
 * model's, or something else. */
static config_kind classify_config(const char *dir, char *model_type, size_t cap) {
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", dir);
    struct stat st;
    if (stat(path, &st) != 0) return CONFIG_NONE;
    json_t *j = st.st_size < (1 << 24) ? json_load_file(path, 0, NULL) : NULL;
    config_kind k = CONFIG_OTHER;
    if (json_is_object(j)) {
        json_t *mt = json_object_get(j, "model_type");
        if (json_is_string(json_object_get(j, "model_fingerprint")) &&
            json_is_string(json_object_get(j, "dataset_fingerprint")))
            k = CONFIG_RUN;
        else if (mt || json_object_get(j, "architectures")) {
            k = CONFIG_MODEL;
            snprintf(model_type, cap, "%s", json_is_string(mt) ? json_string_value(mt) : "?");
        }
    }
    json_decref(j);
    return k;
}

/* Names in dir that are not a run's, up to 3 in list; returns their count and whether a model
 * file (*.safetensors, *.bin) or dataset (*.h5 other than best.h5) is among them. */
static int foreign_entries(const char *dir, char *list, size_t cap, int *model_or_data,
                           sp_error *err) {
    DIR *dp = opendir(dir);
    if (!dp) return sp_fail(err, "%s: cannot list the output directory: %s", dir, strerror(errno));
    int n = 0;
    *model_or_data = 0, list[0] = '\0';
    for (struct dirent *e; (e = readdir(dp));) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || is_run_name(e->d_name)) continue;
        if (sp__ends_with(e->d_name, ".safetensors") || sp__ends_with(e->d_name, ".bin") ||
            sp__ends_with(e->d_name, ".h5"))
            *model_or_data = 1;
        if (n++ < 3) {
            size_t len = strlen(list);
            snprintf(list + len, cap - len, "%s%s", len ? ", " : "", e->d_name);
        }
    }
    closedir(dp);
    return n;
}

int sp__run_dir_check(const char *dir, sp_error *err) {
    struct stat st;
    if (stat(dir, &st) != 0)
        return errno == ENOENT ? 0 : sp_fail(err, "--out %s: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return sp_fail(err, "--out %s exists and is not a directory", dir);
    char model_type[64] = "";
    config_kind k = classify_config(dir, model_type, sizeof model_type);
    if (k == CONFIG_MODEL)
        return sp_fail(err,
                       "--out %s holds a model (config.json of model_type %s): the run would "
                       "overwrite it; give the run its own output directory",
                       dir, model_type);
    if (k == CONFIG_RUN) return 0; /* a run's directory: its own files, and the user's */
    char list[512];
    int model_or_data = 0, n = foreign_entries(dir, list, sizeof list, &model_or_data, err);
    if (n < 0) return -1;
    if (k == CONFIG_OTHER) n++;
    if (n == 0) return 0;
    return sp_fail(err,
                   "--out %s holds files softprompt did not write (%s%s%s%s)%s: a run starts "
                   "only in a new or empty directory, or continues its own run there; choose "
                   "another --out",
                   dir, k == CONFIG_OTHER ? "config.json" : "",
                   k == CONFIG_OTHER && list[0] ? ", " : "", list, n > 3 ? ", ..." : "",
                   model_or_data ? ", a model or dataset among them" : "");
}

/* ---------------------------------------------------------------- the lock */

typedef struct holder {
    char host[256], job[64], started[32];
    long pid;
    int known; /* the file named a holder */
} holder;

static void me(holder *h) {
    memset(h, 0, sizeof *h);
    gethostname(h->host, sizeof h->host - 1);
    h->pid = (long)getpid();
    const char *job = getenv("SLURM_JOB_ID");
    snprintf(h->job, sizeof h->job, "%s", job ? job : "");
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(h->started, sizeof h->started, "%Y-%m-%dT%H:%M:%SZ", &tm);
    h->known = 1;
}

/* The holder named by the lock file's content (hostile content: an unknown holder). */
static void read_holder(int fd, holder *h) {
    memset(h, 0, sizeof *h);
    char buf[1024];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0) return;
    buf[n] = '\0';
    json_t *j = json_loads(buf, 0, NULL);
    const char *host = json_string_value(json_object_get(j, "host"));
    const char *job = json_string_value(json_object_get(j, "job"));
    const char *started = json_string_value(json_object_get(j, "started"));
    json_t *pid = json_object_get(j, "pid");
    if (host && json_is_integer(pid)) {
        snprintf(h->host, sizeof h->host, "%s", host);
        snprintf(h->job, sizeof h->job, "%s", job ? job : "");
        snprintf(h->started, sizeof h->started, "%s", started ? started : "?");
        h->pid = (long)json_integer_value(pid);
        h->known = 1;
    }
    json_decref(j);
}

static void describe(const holder *h, char *buf, size_t cap) {
    if (!h->known) {
        snprintf(buf, cap, "an unknown holder");
        return;
    }
    snprintf(buf, cap, "%s%s%spid %ld on %s, since %s", h->job[0] ? "Slurm job " : "", h->job,
             h->job[0] ? ", " : "", h->pid, h->host, h->started);
}

static double age_seconds(int fd) {
    struct stat st;
    if (fstat(fd, &st) != 0) return 0;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (double)(now.tv_sec - st.st_mtim.tv_sec) +
           1e-9 * (double)(now.tv_nsec - st.st_mtim.tv_nsec);
}

static int same_host(const holder *a, const holder *b) {
    return strcmp(a->host, b->host) == 0;
}

static int pid_alive(long pid) {
    return pid > 0 && (kill((pid_t)pid, 0) == 0 || errno == EPERM);
}

/* Whether the holder named in the file still owns the directory. */
static int holder_live(int fd, const holder *h, const holder *self, int have_flock) {
    if (!h->known || age_seconds(fd) >= SP_LOCK_STALE) return 0;
    if (same_host(h, self)) return !have_flock && h->pid != self->pid && pid_alive(h->pid);
    return 1;
}

/* What a lock guards, for its path and messages: a training run's directory (OUT/.lock) or a
 * command's output file (OUT.lock). */
typedef struct lock_site {
    char path[4200];
    const char *out, *cmd, *run, *kind; /* --out, "train", "training run", "directory" */
} lock_site;

static lock_site dir_site(const char *dir) {
    lock_site w = {.out = dir, .cmd = "train", .run = "training run", .kind = "directory"};
    snprintf(w.path, sizeof w.path, "%s/.lock", dir);
    return w;
}

static lock_site file_site(const char *out, const char *cmd) {
    lock_site w = {.out = out, .cmd = cmd, .run = "run", .kind = "file"};
    snprintf(w.path, sizeof w.path, "%s.lock", out);
    return w;
}

static int refuse(const lock_site *w, const holder *h, int fd, sp_error *err) {
    char who[512];
    int train = strcmp(w->cmd, "train") == 0;
    describe(h, who, sizeof who);
    return sp_fail(err,
                   "--out %s is in use by another %s%s%s (%s; lock %s renewed %.0f s ago): one run "
                   "per output %s; wait for it to end, or use another --out",
                   w->out, train ? "" : w->cmd, train ? "" : " ", w->run, who, w->path,
                   fd >= 0 ? age_seconds(fd) : 0.0, w->kind);
}

static int flock_disabled(void) {
    const char *s = getenv("SP_LOCK_NO_FLOCK");
    return s && *s && strcmp(s, "0") != 0;
}

/* flock(LOCK_EX | LOCK_NB): 1 held by us, 0 held by another process, -1 not supported here. */
static int try_flock(int fd) {
    if (flock_disabled()) return -1;
    if (flock(fd, LOCK_EX | LOCK_NB) == 0) return 1;
    return errno == EWOULDBLOCK ? 0 : -1;
}

static int write_holder(int fd, const holder *h) {
    json_t *j = json_pack("{s:s, s:I, s:s, s:s}", "host", h->host, "pid", (json_int_t)h->pid, "job",
                          h->job, "started", h->started);
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    int rc = s && ftruncate(fd, 0) == 0 && pwrite(fd, s, strlen(s), 0) == (ssize_t)strlen(s) &&
                     fsync(fd) == 0
                 ? 0
                 : -1;
    free(s);
    return rc;
}

static void *heartbeat(void *arg) {
    sp__run_lock *l = arg;
    pthread_mutex_lock(&l->mu);
    while (!l->stop) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += SP_LOCK_HEARTBEAT;
        pthread_cond_timedwait(&l->cv, &l->mu, &until);
        if (!l->stop) futimens(l->fd, NULL);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

/* Whether fd is still the file at path (a run that gave up its directory unlinks the lock). */
static int still_linked(int fd, const char *path) {
    struct stat a, b;
    return fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev &&
           a.st_ino == b.st_ino;
}

/* One attempt: 1 acquired, 0 held by h, 2 try again (the file was replaced), -1 error. */
static int attempt(sp__run_lock *l, const char *path, const holder *self, holder *h,
                   sp_error *err) {
    int got = try_flock(l->fd);
    if (got == 1 && !still_linked(l->fd, path)) return 2;
    read_holder(l->fd, h);
    if (got == 0) return 0;
    if (holder_live(l->fd, h, self, got == 1)) {
        if (got == 1) flock(l->fd, LOCK_UN);
        return 0;
    }
    if (write_holder(l->fd, self) != 0)
        return sp_fail(err, "%s: cannot write: %s", path, strerror(errno));
    if (got == -1) {
        /* A lease without flock: a contender that read the file before we wrote it writes
         * after us; whoever's content is still there after a pause owns the directory. */
        usleep(500 * 1000);
        holder again;
        read_holder(l->fd, &again);
        if (again.pid != self->pid || !same_host(&again, self)) {
            *h = again;
            return 0;
        }
    }
    l->have_flock = got == 1;
    return 1;
}

static int acquire(sp__run_lock *l, const lock_site *w, sp_error *err) {
    memset(l, 0, sizeof *l);
    l->fd = -1;
    char *path = l->path;
    snprintf(path, sizeof l->path, "%s", w->path);
    holder self, h;
    me(&self);
    int rc = 2, waited = 0;
    for (int tries = 0; rc == 2 && tries < 100; tries++) {
        if (l->fd >= 0) close(l->fd);
        l->fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        l->created_file = l->fd >= 0;
        if (l->fd < 0 && errno == EEXIST) l->fd = open(path, O_RDWR | O_CLOEXEC);
        if (l->fd < 0)
            return sp_fail(err, "%s: cannot open the run lock: %s", path, strerror(errno));
        rc = attempt(l, path, &self, &h, err);
    }
    while (rc == 0 && self.job[0] && h.known && strcmp(h.job, self.job) == 0 &&
           waited < SP_LOCK_WAIT) {
        /* our own job's earlier incarnation (a requeue): give it time to go */
        if (waited == 0)
            fprintf(stderr,
                    "softprompt %s: %s is still locked by this job's previous run (pid %ld on "
                    "%s); waiting up to %d s for it to end\n",
                    w->cmd, w->out, h.pid, h.host, SP_LOCK_WAIT);
        sleep(2), waited += 2;
        rc = attempt(l, path, &self, &h, err);
    }
    if (rc != 1) {
        if (rc == 0) refuse(w, &h, l->fd, err);
        if (rc == 2) sp_fail(err, "%s: the run lock keeps being replaced", path);
        close(l->fd);
        l->fd = -1;
        return -1;
    }
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->cv, NULL);
    l->held = 1;
    l->thread_started = pthread_create(&l->thread, NULL, heartbeat, l) == 0;
    return 0;
}

int sp__run_lock_acquire(sp__run_lock *l, const char *dir, sp_error *err) {
    lock_site w = dir_site(dir);
    return acquire(l, &w, err);
}

int sp__out_lock_acquire(sp__run_lock *l, const char *out, const char *cmd, sp_error *err) {
    lock_site w = file_site(out, cmd);
    return acquire(l, &w, err);
}

void sp__run_lock_release(sp__run_lock *l, int undo) {
    if (!l->held) return;
    if (l->thread_started) {
        pthread_mutex_lock(&l->mu);
        l->stop = 1;
        pthread_cond_signal(&l->cv);
        pthread_mutex_unlock(&l->mu);
        pthread_join(l->thread, NULL);
    }
    pthread_cond_destroy(&l->cv);
    pthread_mutex_destroy(&l->mu);
    /* An emptied lock lets the next run start at once (if this fails, it finds a holder that
     * is gone, which is just as free, only not as plainly). */
    int emptied = ftruncate(l->fd, 0);
    (void)emptied;
    /* still holding the lock: a contender that opened this file finds it unlinked */
    if (undo && l->created_file) unlink(l->path);
    if (l->have_flock) flock(l->fd, LOCK_UN);
    close(l->fd);
    l->fd = -1, l->held = 0;
}

static int probe(const lock_site *w, sp_error *err) {
    int fd = open(w->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? 0 : sp_fail(err, "%s: %s", w->path, strerror(errno));
    holder self, h;
    me(&self);
    read_holder(fd, &h);
    int got = flock_disabled()                    ? -1
              : flock(fd, LOCK_SH | LOCK_NB) == 0 ? 1
              : errno == EWOULDBLOCK              ? 0
                                                  : -1;
    int busy = got == 0 || holder_live(fd, &h, &self, got == 1);
    int rc = busy ? refuse(w, &h, fd, err) : 0;
    close(fd); /* also drops the shared lock */
    return rc;
}

int sp__run_lock_probe(const char *dir, sp_error *err) {
    lock_site w = dir_site(dir);
    return probe(&w, err);
}

int sp__out_lock_probe(const char *out, const char *cmd, sp_error *err) {
    lock_site w = file_site(out, cmd);
    return probe(&w, err);
}
