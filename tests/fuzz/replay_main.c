/*
 * replay_main.c — the driver linked into every fuzz target when libFuzzer is
 * not available (COYOTE_FUZZ=OFF, or gcc): it runs LLVMFuzzerTestOneInput
 * once on each file it is given, so a committed corpus becomes a regression
 * test under any compiler and under the sanitizers.
 *
 *     fuzz_<parser> [-libfuzzer_option...] PATH...
 *
 * PATH is a file or a directory (read recursively); arguments starting with
 * '-' are libFuzzer options and are ignored.
 *
 * Invariants:
 *   1. Inputs run in a fixed order: arguments as given, directory entries
 *      sorted by name (strcmp), so a failure reproduces.
 *   2. Each input lives in a heap block of exactly its size, as under
 *      libFuzzer, so ASan reports a read past its end.
 *   3. Exit 0 after "replayed N inputs"; exit 1 when a path cannot be read.
 *      A crash in the target is the target's failure and ends the process.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
/* Optional in a target, as with libFuzzer. */
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static size_t replayed;

static int replay_path(const char *path);

/* Reads the whole file into an exact-size heap block (invariant 2); *data is
 * the caller's to free. 0 or a negative errno. */
static int read_file(const char *path, uint8_t **data, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -errno;
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            cap = cap ? cap * 2 : 4096;
            uint8_t *grown = realloc(buf, cap);
            if (!grown)
                goto fail_nomem;
            buf = grown;
        }
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (n == 0)
            break;
    }
    if (ferror(f)) {
        int err = errno ? -errno : -EIO;
        free(buf);
        fclose(f);
        return err;
    }
    fclose(f);
    /* Shrink to the exact size; malloc(0) may return NULL, so an empty input
     * gets a 1-byte block and size 0. */
    uint8_t *exact = malloc(len ? len : 1);
    if (!exact) {
        free(buf);
        return -ENOMEM;
    }
    if (len)
        memcpy(exact, buf, len);
    free(buf);
    *data = exact;
    *size = len;
    return 0;

fail_nomem:
    free(buf);
    fclose(f);
    return -ENOMEM;
}

static int replay_file(const char *path)
{
    uint8_t *data = NULL;
    size_t size = 0;
    int rc = read_file(path, &data, &size);
    if (rc) {
        fprintf(stderr, "replay: cannot read %s: %s\n", path, strerror(-rc));
        return rc;
    }
    LLVMFuzzerTestOneInput(data, size);
    free(data);
    replayed++;
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int replay_dir(const char *path)
{
    DIR *d = opendir(path);
    if (!d) {
        int err = errno;
        fprintf(stderr, "replay: cannot open directory %s: %s\n", path, strerror(err));
        return -err;
    }
    char **names = NULL;
    size_t count = 0, cap = 0;
    int rc = 0;
    struct dirent *de;
    errno = 0;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        if (count == cap) {
            cap = cap ? cap * 2 : 64;
            char **grown = realloc(names, cap * sizeof *names);
            if (!grown) {
                rc = -ENOMEM;
                goto out;
            }
            names = grown;
        }
        size_t n = strlen(path) + 1 + strlen(de->d_name) + 1;
        names[count] = malloc(n);
        if (!names[count]) {
            rc = -ENOMEM;
            goto out;
        }
        snprintf(names[count], n, "%s/%s", path, de->d_name);
        count++;
        errno = 0;
    }
    if (errno) {
        rc = -errno;
        fprintf(stderr, "replay: cannot list %s: %s\n", path, strerror(-rc));
        goto out;
    }
    qsort(names, count, sizeof *names, by_name);
    for (size_t i = 0; i < count && rc == 0; i++)
        rc = replay_path(names[i]);

out:
    if (rc == -ENOMEM)
        fprintf(stderr, "replay: out of memory listing %s\n", path);
    for (size_t i = 0; i < count; i++)
        free(names[i]);
    free(names);
    closedir(d);
    return rc;
}

static int replay_path(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        int err = errno;
        fprintf(stderr, "replay: cannot read %s: %s\n", path, strerror(err));
        return -err;
    }
    if (S_ISDIR(st.st_mode))
        return replay_dir(path);
    if (S_ISREG(st.st_mode))
        return replay_file(path);
    return 0; /* sockets, fifos, devices: not inputs */
}

int main(int argc, char **argv)
{
    if (LLVMFuzzerInitialize)
        LLVMFuzzerInitialize(&argc, &argv);
    for (int i = 1; i < argc; i++) {
        /* libFuzzer options (-runs=N, -max_len=N, ...) mean nothing here;
         * accepting them lets one command line serve both drivers. */
        if (argv[i][0] == '-')
            continue;
        if (replay_path(argv[i]) != 0)
            return 1;
    }
    printf("replayed %zu inputs\n", replayed);
    return 0;
}
