/* main() for the replay executables of the normal build (fuzz/CMakeLists.txt): runs each file
 * given, or each file of each directory given, through the fuzz target's
 * LLVMFuzzerTestOneInput once, as libFuzzer does when handed a reproducer; the empty input
 * comes first. */
#include <dirent.h>
#include <sys/stat.h>

#include "fuzz_util.h"

static int run_file(const char *path) {
    size_t n;
    char *buf = fz_read(path, &n);
    /* An exact-size copy, so that a read past the input trips AddressSanitizer. */
    uint8_t *data = malloc(n ? n : 1);
    if (!data) fz_die("out of memory", NULL);
    memcpy(data, buf, n);
    free(buf);
    fprintf(stderr, "replay: %s (%zu bytes)\n", path, n);
    LLVMFuzzerTestOneInput(data, n);
    free(data);
    return 1;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv) {
    /* The empty input first: sets the target up (fixtures, base files) even with no files. */
    uint8_t none = 0;
    LLVMFuzzerTestOneInput(&none, 0);
    int runs = 1;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) continue; /* a directory that does not exist: nothing */
        if (!S_ISDIR(st.st_mode)) {
            runs += run_file(argv[i]);
            continue;
        }
        DIR *d = opendir(argv[i]);
        if (!d) fz_die("cannot list", argv[i]);
        char **names = NULL;
        size_t n = 0;
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            names = realloc(names, (n + 1) * sizeof *names);
            size_t len = strlen(argv[i]) + strlen(e->d_name) + 2;
            if (!names || !(names[n] = malloc(len))) fz_die("out of memory", NULL);
            snprintf(names[n++], len, "%s/%s", argv[i], e->d_name);
        }
        closedir(d);
        qsort(names, n, sizeof *names, cmp_str);
        for (size_t k = 0; k < n; k++) {
            struct stat fs;
            if (stat(names[k], &fs) == 0 && S_ISREG(fs.st_mode)) runs += run_file(names[k]);
            free(names[k]);
        }
        free(names);
    }
    printf("replayed %d input%s without a failure\n", runs, runs == 1 ? "" : "s");
    return 0;
}
