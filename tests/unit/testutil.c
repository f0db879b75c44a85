#include "testutil.h"

#include "softprompt/safetensors.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

char *tu_mkdtemp(void) {
    const char *base = getenv("TMPDIR");
    if (!base || !*base) base = "/tmp";
    char *tmpl = tu_path(base, "sptest.XXXXXX");
    ck_assert_msg(mkdtemp(tmpl) != NULL, "mkdtemp: %s", strerror(errno));
    return tmpl;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

void tu_rmtree(const char *path) {
    nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

void tu_write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "open %s: %s", path, strerror(errno));
    ck_assert_uint_eq(fwrite(data, 1, len, f), len);
    ck_assert_int_eq(fclose(f), 0);
}

char *tu_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "open %s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    if (len) *len = (size_t)n;
    return buf;
}

char *tu_path(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

void tu_copy_file(const char *from, const char *to) {
    size_t n;
    char *b = tu_read_file(from, &n);
    tu_write_file(to, b, n);
    free(b);
}

int tu_count_entries(const char *dir, const char *part) {
    DIR *d = opendir(dir);
    ck_assert_msg(d != NULL, "opendir %s: %s", dir, strerror(errno));
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && (!part || strstr(e->d_name, part)))
            n++;
    closedir(d);
    return n;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

char **tu_list_dir(const char *dir, int (*keep)(const char *dir, const char *name), int *n) {
    DIR *d = opendir(dir);
    ck_assert_msg(d != NULL, "cannot open %s", dir);
    char **names = NULL;
    int count = 0, cap = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (!keep(dir, e->d_name)) continue;
        if (count == cap) {
            cap = cap ? 2 * cap : 16;
            names = realloc(names, (size_t)cap * sizeof *names);
            ck_assert_ptr_nonnull(names);
        }
        names[count++] = strdup(e->d_name);
    }
    closedir(d);
    if (count > 0) qsort(names, (size_t)count, sizeof *names, cmp_str);
    *n = count;
    return names;
}

void tu_free_list(char **list, int n) {
    for (int i = 0; i < n; i++) free(list[i]);
    free(list);
}

char *tu_dir;

void tu_dir_setup(void) {
    tu_dir = tu_mkdtemp();
}

void tu_dir_teardown(void) {
    tu_rmtree(tu_dir);
    free(tu_dir);
    tu_dir = NULL;
}

sp_dataset *tu_dataset_open_ok(const char *path) {
    sp_error err = {0};
    sp_dataset *ds = sp_dataset_open(path, &err);
    ck_assert_msg(ds != NULL, "%s", err.msg);
    return ds;
}

void tu_h5_write_dataset(const char *path, const char *name, int rank, const hsize_t *dims,
                         hid_t file_type, hid_t mem_type, const void *data) {
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    ck_assert_int_ge(f, 0);
    hid_t s = H5Screate_simple(rank, dims, NULL);
    hid_t d = H5Dcreate2(f, name, file_type, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    ck_assert_int_ge(d, 0);
    if (data) ck_assert_int_ge(H5Dwrite(d, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), 0);
    H5Dclose(d), H5Sclose(s), H5Fclose(f);
}

/* Opens path for writing and deletes root attribute name if there is one (*had says so). */
static hid_t open_without_attr(const char *path, const char *name, int *had) {
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    ck_assert_int_ge(f, 0);
    htri_t has = H5Aexists(f, name);
    ck_assert_int_ge(has, 0);
    if (has) ck_assert_int_ge(H5Adelete(f, name), 0);
    *had = has > 0;
    return f;
}

static int set_attr(const char *path, const char *name, hid_t file_type, hid_t mem_type,
                    const void *value) {
    int had;
    hid_t f = open_without_attr(path, name, &had);
    hid_t s = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, name, file_type, s, H5P_DEFAULT, H5P_DEFAULT);
    ck_assert_int_ge(a, 0);
    ck_assert_int_ge(H5Awrite(a, mem_type, value), 0);
    H5Aclose(a), H5Sclose(s), H5Fclose(f);
    return had;
}

int tu_h5_set_str_attr(const char *path, const char *name, const char *value, int vlen) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, vlen ? H5T_VARIABLE : strlen(value));
    H5Tset_cset(t, H5T_CSET_UTF8);
    int had = set_attr(path, name, t, t, vlen ? (const void *)&value : (const void *)value);
    H5Tclose(t);
    return had;
}

int tu_h5_set_i64_attr(const char *path, const char *name, int64_t value) {
    return set_attr(path, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &value);
}

static char *slurp_fd(int fd) {
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    ssize_t r;
    while ((r = read(fd, buf + len, cap - len - 1)) > 0) {
        len += (size_t)r;
        if (cap - len < 2) buf = realloc(buf, cap *= 2);
    }
    buf[len] = '\0';
    return buf;
}

void tu_st_set_f32(const char *path, const char *tensor, int64_t index, float value) {
    sp_st_file f;
    sp_error err = {0};
    ck_assert_msg(sp_st_open(&f, path, &err) == 0, "%s", err.msg);
    const sp_st_tensor *t = sp_st_find(&f, tensor);
    ck_assert_msg(t && t->dtype == SP_DTYPE_F32 && index >= 0 && index < t->numel, "%s: %s[%lld]",
                  path, tensor, (long long)index);
    long off = (long)((const char *)t->data - (const char *)f.map) + (long)index * 4;
    sp_st_close(&f);
    FILE *fp = fopen(path, "r+b");
    ck_assert_ptr_nonnull(fp);
    ck_assert_int_eq(fseek(fp, off, SEEK_SET), 0);
    ck_assert_uint_eq(fwrite(&value, sizeof value, 1, fp), 1);
    ck_assert_int_eq(fclose(fp), 0);
}

int tu_run_cli(const char *const *args, char **out, char **errout) {
    char *dir = tu_mkdtemp();
    char *out_path = tu_path(dir, "stdout"), *err_path = tu_path(dir, "stderr");
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int argc = 0;
    while (args[argc]) argc++;
    char **argv = calloc((size_t)argc + 2, sizeof *argv);
    argv[0] = (char *)SP_CLI_PATH;
    for (int i = 0; i < argc; i++) argv[i + 1] = (char *)args[i];
    pid_t pid;
    int rc = posix_spawn(&pid, SP_CLI_PATH, &fa, NULL, argv, environ);
    ck_assert_msg(rc == 0, "spawn %s: %s", SP_CLI_PATH, strerror(rc));
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    posix_spawn_file_actions_destroy(&fa);
    free(argv);
    int fd = open(out_path, O_RDONLY);
    char *o = slurp_fd(fd);
    close(fd);
    fd = open(err_path, O_RDONLY);
    char *e = slurp_fd(fd);
    close(fd);
    if (out)
        *out = o;
    else
        free(o);
    if (errout)
        *errout = e;
    else
        free(e);
    tu_rmtree(dir);
    free(dir), free(out_path), free(err_path);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

tu_cli tu_cli_run(const char *const *args) {
    tu_cli r;
    r.rc = tu_run_cli(args, &r.out, &r.err);
    return r;
}

void tu_cli_free(tu_cli *r) {
    free(r->out), free(r->err);
    r->out = r->err = NULL;
}

void tu_assert_has(const char *hay, const char *needle) {
    ck_assert_msg(strstr(hay, needle) != NULL, "expected '%s' in:\n%s", needle, hay);
}

void tu_flip_byte(const char *path, long off, unsigned char mask) {
    FILE *f = fopen(path, "r+b");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(fseek(f, off, SEEK_SET), 0);
    int ch = fgetc(f);
    ck_assert_int_ne(ch, EOF);
    ck_assert_int_eq(fseek(f, off, SEEK_SET), 0);
    fputc(ch ^ mask, f);
    ck_assert_int_eq(fclose(f), 0);
}

long tu_h5_dataset_offset(const char *path, const char *name) {
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    ck_assert_int_ge(f, 0);
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    ck_assert_int_ge(d, 0);
    haddr_t off = H5Dget_offset(d);
    ck_assert(off != HADDR_UNDEF);
    H5Dclose(d), H5Fclose(f);
    return (long)off;
}

size_t tu_put_utf8(uint32_t cp, char *o) {
    if (cp < 0x80) return o[0] = (char)cp, 1;
    if (cp < 0x800) return o[0] = (char)(0xC0 | cp >> 6), o[1] = (char)(0x80 | (cp & 63)), 2;
    if (cp < 0x10000)
        return o[0] = (char)(0xE0 | cp >> 12), o[1] = (char)(0x80 | ((cp >> 6) & 63)),
               o[2] = (char)(0x80 | (cp & 63)), 3;
    return o[0] = (char)(0xF0 | cp >> 18), o[1] = (char)(0x80 | ((cp >> 12) & 63)),
           o[2] = (char)(0x80 | ((cp >> 6) & 63)), o[3] = (char)(0x80 | (cp & 63)), 4;
}

int tu_run_suite(Suite *s) {
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

TCase *tu_tcase(Suite *s, const char *name) {
    TCase *tc = tcase_create(name);
    tcase_add_checked_fixture(tc, tu_dir_setup, tu_dir_teardown);
    suite_add_tcase(s, tc);
    return tc;
}

int tu_main(const char *name, const TTest *const *tests, void (*setup)(void),
            void (*teardown)(void)) {
    Suite *s = suite_create(name);
    TCase *tc = tu_tcase(s, name);
    if (setup || teardown) tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 300);
    for (int i = 0; tests[i]; i++) tcase_add_test(tc, tests[i]);
    return tu_run_suite(s);
}

/* H5Ewalk2 callback: sets *(int *)data when a description mentions a checksum. */
static herr_t find_checksum(unsigned n, const H5E_error2_t *e, void *data) {
    (void)n;
    if (e->desc && strstr(e->desc, "checksum")) *(int *)data = 1;
    return 0;
}

/* 1 when HDF5 fails the metadata checksum of object name's header in path. */
static int header_checksum_fails(const char *path, const char *name) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return 0;
    H5O_info_t info;
    int bad = 0;
    if (H5Oget_info_by_name2(f, name, &info, H5O_INFO_BASIC, H5P_DEFAULT) < 0)
        H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, find_checksum, &bad);
    H5Eclear2(H5E_DEFAULT);
    H5Fclose(f);
    return bad;
}

char *tu_damage_header(const char *path, const char *name, const char *out_name) {
    /* Blocks on HDF5's free lists keep the stack of their first allocation (e.g. the writer's),
     * which LeakSanitizer would report instead of the failed load's (see lsan.supp). */
    H5garbage_collect();
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    H5O_info_t info;
    ck_assert_int_ge(H5Oget_info_by_name2(f, name, &info, H5O_INFO_BASIC, H5P_DEFAULT), 0);
    H5Fclose(f);
    size_t n;
    char *good = tu_read_file(path, &n), *bad = malloc(n), *out = tu_path(tu_dir, out_name);
    int done = 0;
    for (size_t at = (size_t)info.addr + 6; !done && at < (size_t)info.addr + 400 && at < n; at++) {
        memcpy(bad, good, n);
        bad[at] ^= 0x5a;
        tu_write_file(out, bad, n);
        done = header_checksum_fails(out, name);
    }
    ck_assert_msg(done, "no byte of the header of %s fails its checksum", name);
    free(good), free(bad);
    return out;
}
