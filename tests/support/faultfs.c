/*
 * faultfs.c — an in-memory file system with a crash model and fault injection
 * behind struct fileops (see faultfs.h for the model as tests see it).
 *
 * Objects:
 *   inode  — a file's bytes, twice: `cur` (what reads see now) and `dur` (what
 *            survives a power loss, set by datasync). Kept alive while any
 *            current name, durable name or open descriptor refers to it.
 *   dir    — a directory: its path and two name tables, `cur` (what open and
 *            list_dir see) and `dur` (what a crash restores, set by sync_dir).
 *            Directories themselves are durable at mkdir and never removed.
 *   ofile  — an open descriptor: fd = fd_base + slot index.
 *
 * Invariants:
 *   1. inode.links_cur / links_dur count the entries of all dirs' cur / dur
 *      tables naming it; nopen counts the open descriptors on it. An inode is
 *      freed as soon as all three are zero (gc()).
 *   2. A content's bytes in [stored, len) are zeros that are not kept in
 *      memory (fallocate'd or ftruncate'd space), and stored <= len.
 *   3. Descriptor numbers are never reused across a crash: faultfs_crash()
 *      moves fd_base past every number handed out before, so a stale fd
 *      answers -EBADF instead of reaching a file opened after the crash.
 *   4. One mutex guards everything; list_dir calls its callback with the
 *      mutex released (a callback may call back into the file system).
 *   5. Crash with CRASH_GARBLE never changes a byte that is equal in `cur`
 *      and `dur`: a sector that differs is kept as now, kept as at the last
 *      datasync, or has its *changed* bytes replaced by garbage. Bytes written
 *      and synced are therefore never damaged by a later append to the same
 *      sector (the "powersafe overwrite" property SQLite assumes of disks).
 *
 * Fault points count calls on valid descriptors/directories, 1-based, since
 * faultfs_new() or the last faultfs_crash().
 */
#include "faultfs.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base/xmalloc.h"

#define SECTOR 512
#define FD_FIRST 100 /* far from the real descriptors a test has open */

struct content {
    uint8_t *data;
    size_t stored, cap;
    uint64_t len;
};

struct inode {
    struct content cur, dur;
    unsigned links_cur, links_dur, nopen;
    int lock_fd; /* descriptor holding the flock-style lock, or -1 */
};

struct dentry {
    char *name;
    struct inode *ino;
};

struct dentries {
    struct dentry *v;
    size_t n, cap;
};

struct dir {
    char *path;
    struct dentries cur, dur;
};

struct ofile {
    struct inode *ino; /* NULL: slot free */
    int accmode;       /* O_RDONLY, O_WRONLY or O_RDWR */
};

struct faultfs {
    pthread_mutex_t mu;
    struct fileops ops;
    uint64_t rng;

    struct dir **dirs;
    size_t ndirs, dirs_cap;
    struct inode **inodes;
    size_t ninodes, inodes_cap;
    struct ofile *files;
    size_t nfiles, files_cap;
    int fd_base;

    unsigned syncs, writes;
    unsigned crash_sync, fail_sync, fail_write, short_write; /* 0: none */
    int fail_sync_err, fail_write_err;
    uint64_t space;
    bool dead;
};

/* ---- small pieces ------------------------------------------------------- */

static uint64_t rnd(struct faultfs *fs)
{
    /* splitmix64: any seed, 0 included, gives a good sequence */
    uint64_t z = (fs->rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint8_t content_at(const struct content *c, uint64_t i)
{
    return i < c->stored ? c->data[i] : 0;
}

static void content_reserve(struct content *c, size_t need)
{
    if (need <= c->cap)
        return;
    size_t cap = c->cap ? c->cap : 256;
    while (cap < need)
        cap *= 2;
    c->data = xrealloc(c->data, cap);
    c->cap = cap;
}

/* Write n bytes at off (off + n checked by the caller to fit in size_t). */
static void content_write(struct content *c, uint64_t off, const void *buf, size_t n)
{
    size_t end = (size_t)off + n;
    if (n == 0)
        return;
    content_reserve(c, end);
    if (off > c->stored)
        memset(c->data + c->stored, 0, (size_t)off - c->stored);
    memcpy(c->data + off, buf, n);
    if (end > c->stored)
        c->stored = end;
    if (end > c->len)
        c->len = end;
}

static void content_truncate(struct content *c, uint64_t len)
{
    if (len < c->stored)
        c->stored = (size_t)len;
    c->len = len;
}

static void content_copy(struct content *dst, const struct content *src)
{
    content_reserve(dst, src->stored);
    if (src->stored)
        memcpy(dst->data, src->data, src->stored);
    dst->stored = src->stored;
    dst->len = src->len;
}

static void content_free(struct content *c)
{
    free(c->data);
    memset(c, 0, sizeof *c);
}

static void dentries_add(struct dentries *t, const char *name, struct inode *ino)
{
    if (t->n == t->cap) {
        t->cap = t->cap ? t->cap * 2 : 8;
        t->v = xrealloc(t->v, t->cap * sizeof *t->v);
    }
    t->v[t->n].name = xstrdup(name);
    t->v[t->n].ino = ino;
    t->n++;
}

static void dentries_remove(struct dentries *t, size_t i)
{
    free(t->v[i].name);
    t->v[i] = t->v[--t->n];
}

static struct dentry *dentries_find(const struct dentries *t, const char *name)
{
    for (size_t i = 0; i < t->n; i++)
        if (!strcmp(t->v[i].name, name))
            return &t->v[i];
    return NULL;
}

static void dentries_clear(struct dentries *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->v[i].name);
    t->n = 0;
}

static struct inode *inode_new(struct faultfs *fs)
{
    struct inode *ino = xcalloc(1, sizeof *ino);
    ino->lock_fd = -1;
    if (fs->ninodes == fs->inodes_cap) {
        fs->inodes_cap = fs->inodes_cap ? fs->inodes_cap * 2 : 16;
        fs->inodes = xrealloc(fs->inodes, fs->inodes_cap * sizeof *fs->inodes);
    }
    fs->inodes[fs->ninodes++] = ino;
    return ino;
}

static void inode_free(struct inode *ino)
{
    content_free(&ino->cur);
    content_free(&ino->dur);
    free(ino);
}

/* Free every inode nothing refers to any more (invariant 1). Removal keeps
 * the order of the others, so crash garbling stays reproducible. */
static void gc(struct faultfs *fs)
{
    size_t j = 0;
    for (size_t i = 0; i < fs->ninodes; i++) {
        struct inode *ino = fs->inodes[i];
        if (ino->links_cur == 0 && ino->links_dur == 0 && ino->nopen == 0)
            inode_free(ino);
        else
            fs->inodes[j++] = ino;
    }
    fs->ninodes = j;
}

/* Bytes in use: every file still reachable now (by name or descriptor). */
static uint64_t space_used(const struct faultfs *fs)
{
    uint64_t used = 0;
    for (size_t i = 0; i < fs->ninodes; i++) {
        const struct inode *ino = fs->inodes[i];
        if (ino->links_cur || ino->nopen)
            used += ino->cur.len;
    }
    return used;
}

static uint64_t space_avail(const struct faultfs *fs)
{
    uint64_t used = space_used(fs);
    return fs->space > used ? fs->space - used : 0;
}

/* ---- paths -------------------------------------------------------------- */

/* A path split into its directory and its last component. */
struct loc {
    char full[PATH_MAX];   /* normalized: no "//", no trailing '/' */
    char parent[PATH_MAX]; /* "/" for "/x", "." for "x" */
    const char *name;      /* points into full; "" for "/" itself */
};

static int locate(const char *path, struct loc *l)
{
    size_t o = 0;
    for (const char *p = path; *p; p++) {
        if (*p == '/' && o > 0 && l->full[o - 1] == '/')
            continue;
        if (o + 1 >= sizeof l->full)
            return -ENAMETOOLONG;
        l->full[o++] = *p;
    }
    if (o == 0)
        return -ENOENT;
    if (o > 1 && l->full[o - 1] == '/')
        o--;
    l->full[o] = '\0';

    char *slash = strrchr(l->full, '/');
    if (!slash) {
        strcpy(l->parent, ".");
        l->name = l->full;
    } else if (slash == l->full) {
        strcpy(l->parent, "/");
        l->name = l->full + 1;
    } else {
        size_t n = (size_t)(slash - l->full);
        memcpy(l->parent, l->full, n);
        l->parent[n] = '\0';
        l->name = slash + 1;
    }
    return 0;
}

static struct dir *find_dir(const struct faultfs *fs, const char *norm)
{
    for (size_t i = 0; i < fs->ndirs; i++)
        if (!strcmp(fs->dirs[i]->path, norm))
            return fs->dirs[i];
    return NULL;
}

static struct dir *dir_new(struct faultfs *fs, const char *norm)
{
    struct dir *d = xcalloc(1, sizeof *d);
    d->path = xstrdup(norm);
    if (fs->ndirs == fs->dirs_cap) {
        fs->dirs_cap = fs->dirs_cap ? fs->dirs_cap * 2 : 16;
        fs->dirs = xrealloc(fs->dirs, fs->dirs_cap * sizeof *fs->dirs);
    }
    fs->dirs[fs->ndirs++] = d;
    return d;
}

/* The current entry a normalized path names, or NULL. */
static struct dentry *find_file(const struct faultfs *fs, const char *norm)
{
    struct loc l;
    struct dir *d;
    if (locate(norm, &l) < 0 || !*l.name || !(d = find_dir(fs, l.parent)))
        return NULL;
    return dentries_find(&d->cur, l.name);
}

/* The directory a normalized path names, or the errno saying why not. */
static int need_dir(const struct faultfs *fs, const char *norm, struct dir **out)
{
    *out = find_dir(fs, norm);
    if (*out)
        return 0;
    return find_file(fs, norm) ? -ENOTDIR : -ENOENT;
}

/* Resolve a file path to its parent directory and (maybe NULL) entry. */
static int resolve(const struct faultfs *fs, const char *path, struct loc *l, struct dir **parent,
                   struct dentry **entry)
{
    int r = locate(path, l);
    if (r < 0)
        return r;
    if (!*l->name || find_dir(fs, l->full))
        return -EISDIR;
    r = need_dir(fs, l->parent, parent);
    if (r < 0)
        return r;
    *entry = dentries_find(&(*parent)->cur, l->name);
    return 0;
}

/* ---- descriptors -------------------------------------------------------- */

static struct ofile *get_file(struct faultfs *fs, int fd)
{
    if (fd < fs->fd_base)
        return NULL;
    size_t i = (size_t)(fd - fs->fd_base);
    if (i >= fs->nfiles || !fs->files[i].ino)
        return NULL;
    return &fs->files[i];
}

static int fd_new(struct faultfs *fs, struct inode *ino, int accmode)
{
    size_t i;
    for (i = 0; i < fs->nfiles; i++)
        if (!fs->files[i].ino)
            break;
    if (i == fs->nfiles) {
        if (fs->nfiles == fs->files_cap) {
            fs->files_cap = fs->files_cap ? fs->files_cap * 2 : 16;
            fs->files = xrealloc(fs->files, fs->files_cap * sizeof *fs->files);
        }
        fs->nfiles++;
    }
    fs->files[i].ino = ino;
    fs->files[i].accmode = accmode;
    ino->nopen++;
    return fs->fd_base + (int)i;
}

static void fd_release(struct faultfs *fs, int fd, struct ofile *f)
{
    if (f->ino->lock_fd == fd)
        f->ino->lock_fd = -1;
    f->ino->nopen--;
    f->ino = NULL;
}

/* ---- the fileops members ------------------------------------------------ */

#define LOCK(fs) pthread_mutex_lock(&(fs)->mu)
#define UNLOCK(fs) pthread_mutex_unlock(&(fs)->mu)

static int ff_open(void *ctx, const char *path, int flags, unsigned mode)
{
    struct faultfs *fs = ctx;
    struct loc l;
    struct dir *parent;
    struct dentry *e;
    struct inode *ino;
    int accmode = flags & O_ACCMODE, r;
    bool trunc = (flags & O_TRUNC) && accmode != O_RDONLY;

    LOCK(fs);
    r = resolve(fs, path, &l, &parent, &e);
    if (r < 0)
        goto out;
    if (e && (flags & O_CREAT) && (flags & O_EXCL)) {
        r = -EEXIST;
        goto out;
    }
    if (!e && !(flags & O_CREAT)) {
        r = -ENOENT;
        goto out;
    }
    if (fs->dead && (!e || trunc)) {
        r = -EIO;
        goto out;
    }
    if (e) {
        ino = e->ino;
    } else {
        ino = inode_new(fs);
        dentries_add(&parent->cur, l.name, ino);
        ino->links_cur++;
    }
    if (trunc)
        content_truncate(&ino->cur, 0);
    r = fd_new(fs, ino, accmode);
out:
    UNLOCK(fs);
    return r;
}

static int ff_close(void *ctx, int fd)
{
    struct faultfs *fs = ctx;
    struct ofile *f;
    int r = 0;
    LOCK(fs);
    f = get_file(fs, fd);
    if (!f) {
        r = -EBADF;
    } else {
        fd_release(fs, fd, f);
        gc(fs);
    }
    UNLOCK(fs);
    return r;
}

static ssize_t ff_pread(void *ctx, int fd, void *buf, size_t n, uint64_t off)
{
    struct faultfs *fs = ctx;
    struct ofile *f;
    ssize_t r = 0;
    LOCK(fs);
    f = get_file(fs, fd);
    if (!f || f->accmode == O_WRONLY) {
        r = -EBADF;
    } else if (off > INT64_MAX) {
        r = -EINVAL;
    } else if (off < f->ino->cur.len) {
        const struct content *c = &f->ino->cur;
        uint64_t k = c->len - off, from_data = 0;
        if (k > n)
            k = n;
        if (k > SSIZE_MAX)
            k = SSIZE_MAX;
        if (off < c->stored) {
            from_data = c->stored - off < k ? c->stored - off : k;
            memcpy(buf, c->data + off, (size_t)from_data);
        }
        memset((uint8_t *)buf + from_data, 0, (size_t)(k - from_data)); /* invariant 2 */
        r = (ssize_t)k;
    }
    UNLOCK(fs);
    return r;
}

static ssize_t ff_pwrite(void *ctx, int fd, const void *buf, size_t n, uint64_t off)
{
    struct faultfs *fs = ctx;
    struct ofile *f;
    struct content *c;
    ssize_t r;
    LOCK(fs);
    f = get_file(fs, fd);
    if (!f || f->accmode == O_RDONLY) {
        r = -EBADF;
        goto out;
    }
    fs->writes++;
    if (fs->dead) {
        r = -EIO;
        goto out;
    }
    if (fs->fail_write && fs->writes == fs->fail_write) {
        fs->fail_write = 0;
        r = fs->fail_write_err;
        goto out;
    }
    if (n == 0) {
        r = 0;
        goto out;
    }
    if (n > SSIZE_MAX)
        n = SSIZE_MAX;
    if (off > INT64_MAX || n > (uint64_t)SIZE_MAX - off) {
        r = -EFBIG;
        goto out;
    }
    if (fs->short_write && fs->writes == fs->short_write) {
        fs->short_write = 0;
        n = n > 1 ? n / 2 : n;
    }
    c = &f->ino->cur;
    if (off + n > c->len) {
        /* Like a full disk: write what fits, then -ENOSPC on the next call. */
        uint64_t room = c->len + space_avail(fs);
        if (off >= room) {
            r = -ENOSPC;
            goto out;
        }
        if (off + n > room)
            n = (size_t)(room - off);
    }
    content_write(c, off, buf, n);
    r = (ssize_t)n;
out:
    UNLOCK(fs);
    return r;
}

/* The fault checks shared by datasync and sync_dir; 0 means "do the sync". */
static int sync_point(struct faultfs *fs)
{
    fs->syncs++;
    if (fs->dead)
        return -EIO;
    if (fs->crash_sync && fs->syncs == fs->crash_sync) {
        fs->crash_sync = 0;
        fs->dead = true;
        return -EIO;
    }
    if (fs->fail_sync && fs->syncs == fs->fail_sync) {
        fs->fail_sync = 0;
        return fs->fail_sync_err;
    }
    return 0;
}

static int ff_datasync(void *ctx, int fd)
{
    struct faultfs *fs = ctx;
    struct ofile *f;
    int r;
    LOCK(fs);
    f = get_file(fs, fd);
    if (!f) {
        r = -EBADF;
    } else if ((r = sync_point(fs)) == 0) {
        content_copy(&f->ino->dur, &f->ino->cur);
    }
    UNLOCK(fs);
    return r;
}

static int ff_ftruncate(void *ctx, int fd, uint64_t size)
{
    struct faultfs *fs = ctx;
    struct ofile *f;
    int r = 0;
    LOCK(fs);
    f = get_file(fs, fd);
    if (!f)
        r = -EBADF;
    else if (f->accmode == O_RDONLY || size > INT64_MAX)
        r = -EINVAL;
    else if (fs->dead)
        r = -EIO;
    else
        content_truncate(&f->ino->cur, size);
    UNLOCK(fs);
    return r;
}

static int ff_fallocate(void *ctx, int fd, uint64_t off, uint64_t len)
{
    struct faultfs *fs = ctx;
    struct ofile *f;
    int r = 0;
    LOCK(fs);
    f = get_file(fs, fd);
    if (!f || f->accmode == O_RDONLY) {
        r = -EBADF;
    } else if (fs->dead) {
        r = -EIO;
    } else if (len == 0) {
        r = 0; /* as fileops_posix */
    } else if (off > INT64_MAX || len > INT64_MAX - off) {
        r = -EFBIG;
    } else if (off + len > f->ino->cur.len) {
        uint64_t grow = off + len - f->ino->cur.len;
        if (grow > space_avail(fs))
            r = -ENOSPC;
        else
            f->ino->cur.len = off + len; /* zeros, not stored (invariant 2) */
    }
    UNLOCK(fs);
    return r;
}

static int ff_fsize(void *ctx, int fd, uint64_t *size)
{
    struct faultfs *fs = ctx;
    struct ofile *f;
    int r = 0;
    LOCK(fs);
    f = get_file(fs, fd);
    if (!f)
        r = -EBADF;
    else
        *size = f->ino->cur.len;
    UNLOCK(fs);
    return r;
}

static int ff_rename(void *ctx, const char *from, const char *to)
{
    struct faultfs *fs = ctx;
    struct loc lf, lt;
    struct dir *df, *dt;
    struct dentry *ef = NULL, *et = NULL;
    struct inode *ino;
    int r;

    LOCK(fs);
    /* Renaming directories is not modeled: the storage code never does it. */
    r = resolve(fs, from, &lf, &df, &ef);
    if (r == -EISDIR)
        r = -EINVAL;
    if (r == 0 && !ef)
        r = -ENOENT;
    if (r == 0)
        r = resolve(fs, to, &lt, &dt, &et);
    if (r == 0 && fs->dead)
        r = -EIO;
    if (r < 0 || ef->ino == (et ? et->ino : NULL))
        goto out; /* error, or both names already the same file: nothing to do */

    ino = ef->ino;
    if (et) {
        et->ino->links_cur--;
        et->ino = ino; /* atomic replacement */
    } else {
        dentries_add(&dt->cur, lt.name, ino);
    }
    /* ef may have moved if dentries_add grew the same table: look it up again. */
    for (size_t i = 0; i < df->cur.n; i++) {
        if (!strcmp(df->cur.v[i].name, lf.name)) {
            dentries_remove(&df->cur, i);
            break;
        }
    }
    gc(fs);
out:
    UNLOCK(fs);
    return r;
}

static int ff_unlink(void *ctx, const char *path)
{
    struct faultfs *fs = ctx;
    struct loc l;
    struct dir *d;
    struct dentry *e;
    int r;
    LOCK(fs);
    r = resolve(fs, path, &l, &d, &e);
    if (r == 0 && !e)
        r = -ENOENT;
    if (r == 0 && fs->dead)
        r = -EIO;
    if (r == 0) {
        e->ino->links_cur--;
        dentries_remove(&d->cur, (size_t)(e - d->cur.v));
        gc(fs);
    }
    UNLOCK(fs);
    return r;
}

static int ff_mkdir(void *ctx, const char *path, unsigned mode)
{
    struct faultfs *fs = ctx;
    struct loc l;
    struct dir *parent;
    int r;
    LOCK(fs);
    r = locate(path, &l);
    if (r < 0)
        goto out;
    if (fs->dead) {
        r = -EIO;
        goto out;
    }
    if (!*l.name || find_dir(fs, l.full))
        goto out; /* an existing directory is success */
    r = need_dir(fs, l.parent, &parent);
    if (r < 0)
        goto out;
    if (dentries_find(&parent->cur, l.name)) {
        r = -EEXIST;
        goto out;
    }
    dir_new(fs, l.full);
out:
    UNLOCK(fs);
    return r;
}

static int ff_sync_dir(void *ctx, const char *path)
{
    struct faultfs *fs = ctx;
    struct loc l;
    struct dir *d;
    int r;
    LOCK(fs);
    r = locate(path, &l);
    if (r == 0)
        r = need_dir(fs, l.full, &d);
    if (r == 0)
        r = sync_point(fs);
    if (r == 0) {
        /* Take the new references before dropping the old ones, so an inode
         * named in both tables is never freed in between. */
        struct dentries old = d->dur;
        memset(&d->dur, 0, sizeof d->dur);
        for (size_t i = 0; i < d->cur.n; i++) {
            dentries_add(&d->dur, d->cur.v[i].name, d->cur.v[i].ino);
            d->cur.v[i].ino->links_dur++;
        }
        for (size_t i = 0; i < old.n; i++)
            old.v[i].ino->links_dur--;
        dentries_clear(&old);
        free(old.v);
        gc(fs);
    }
    UNLOCK(fs);
    return r;
}

static int ff_list_dir(void *ctx, const char *path, int (*cb)(void *arg, const char *name),
                       void *arg)
{
    struct faultfs *fs = ctx;
    struct loc l;
    struct dir *d;
    char **names = NULL;
    size_t n = 0;
    int r;

    LOCK(fs);
    r = locate(path, &l);
    if (r == 0)
        r = need_dir(fs, l.full, &d);
    if (r == 0) {
        /* Copy the names (files, then subdirectories) so that cb runs unlocked. */
        names = xmalloc((d->cur.n + fs->ndirs) * sizeof *names);
        for (size_t i = 0; i < d->cur.n; i++)
            names[n++] = xstrdup(d->cur.v[i].name);
        for (size_t i = 0; i < fs->ndirs; i++) {
            struct loc sub;
            if (fs->dirs[i] != d && locate(fs->dirs[i]->path, &sub) == 0 && *sub.name &&
                !strcmp(sub.parent, l.full))
                names[n++] = xstrdup(sub.name);
        }
    }
    UNLOCK(fs);
    for (size_t i = 0; i < n; i++) {
        if (r == 0)
            r = cb(arg, names[i]);
        free(names[i]);
    }
    free(names);
    return r;
}

static int ff_lock(void *ctx, int fd)
{
    struct faultfs *fs = ctx;
    struct ofile *f;
    int r = 0;
    LOCK(fs);
    f = get_file(fs, fd);
    if (!f)
        r = -EBADF;
    else if (f->ino->lock_fd != -1 && f->ino->lock_fd != fd)
        r = -EWOULDBLOCK;
    else
        f->ino->lock_fd = fd;
    UNLOCK(fs);
    return r;
}

/* ---- the test-facing API ------------------------------------------------ */

struct faultfs *faultfs_new(uint64_t seed)
{
    struct faultfs *fs = xcalloc(1, sizeof *fs);
    pthread_mutex_init(&fs->mu, NULL);
    fs->rng = seed;
    fs->fd_base = FD_FIRST;
    fs->space = UINT64_MAX;
    fs->ops = (struct fileops){
        .ctx = fs,
        .open = ff_open,
        .close = ff_close,
        .pread = ff_pread,
        .pwrite = ff_pwrite,
        .datasync = ff_datasync,
        .ftruncate = ff_ftruncate,
        .fallocate = ff_fallocate,
        .fsize = ff_fsize,
        .rename = ff_rename,
        .unlink = ff_unlink,
        .mkdir = ff_mkdir,
        .sync_dir = ff_sync_dir,
        .list_dir = ff_list_dir,
        .lock = ff_lock,
    };
    dir_new(fs, "/");
    dir_new(fs, ".");
    return fs;
}

void faultfs_free(struct faultfs *fs)
{
    if (!fs)
        return;
    for (size_t i = 0; i < fs->ndirs; i++) {
        struct dir *d = fs->dirs[i];
        dentries_clear(&d->cur);
        dentries_clear(&d->dur);
        free(d->cur.v);
        free(d->dur.v);
        free(d->path);
        free(d);
    }
    for (size_t i = 0; i < fs->ninodes; i++)
        inode_free(fs->inodes[i]);
    free(fs->dirs);
    free(fs->inodes);
    free(fs->files);
    pthread_mutex_destroy(&fs->mu);
    free(fs);
}

const struct fileops *faultfs_ops(struct faultfs *fs)
{
    return &fs->ops;
}

void faultfs_crash_at_sync(struct faultfs *fs, unsigned n)
{
    LOCK(fs);
    fs->crash_sync = n;
    UNLOCK(fs);
}

void faultfs_fail_sync_at(struct faultfs *fs, unsigned n, int err)
{
    LOCK(fs);
    fs->fail_sync = n;
    fs->fail_sync_err = err;
    UNLOCK(fs);
}

void faultfs_fail_write_at(struct faultfs *fs, unsigned n, int err)
{
    LOCK(fs);
    fs->fail_write = n;
    fs->fail_write_err = err;
    UNLOCK(fs);
}

void faultfs_short_write_at(struct faultfs *fs, unsigned n)
{
    LOCK(fs);
    fs->short_write = n;
    UNLOCK(fs);
}

void faultfs_set_space(struct faultfs *fs, uint64_t bytes)
{
    LOCK(fs);
    fs->space = bytes;
    UNLOCK(fs);
}

static void clear_faults(struct faultfs *fs)
{
    fs->crash_sync = fs->fail_sync = fs->fail_write = fs->short_write = 0;
    fs->space = UINT64_MAX;
    fs->dead = false;
}

void faultfs_clear_faults(struct faultfs *fs)
{
    LOCK(fs);
    clear_faults(fs);
    UNLOCK(fs);
}

/* The getters take a const fs; the mutex is the one mutable part of it. */
unsigned faultfs_sync_count(const struct faultfs *fs)
{
    struct faultfs *m = (struct faultfs *)fs;
    LOCK(m);
    unsigned n = m->syncs;
    UNLOCK(m);
    return n;
}

unsigned faultfs_write_count(const struct faultfs *fs)
{
    struct faultfs *m = (struct faultfs *)fs;
    LOCK(m);
    unsigned n = m->writes;
    UNLOCK(m);
    return n;
}

bool faultfs_dead(const struct faultfs *fs)
{
    struct faultfs *m = (struct faultfs *)fs;
    LOCK(m);
    bool dead = m->dead;
    UNLOCK(m);
    return dead;
}

/* A torn write (invariant 5): per differing sector, now / last sync /
 * garbage over the bytes that changed; the size is either of the two. */
static void garble(struct faultfs *fs, struct inode *ino)
{
    const struct content *cur = &ino->cur, *dur = &ino->dur;
    size_t span = cur->stored > dur->stored ? cur->stored : dur->stored;
    uint64_t len = (rnd(fs) & 1) ? cur->len : dur->len;
    struct content out = {0};

    content_reserve(&out, span);
    for (size_t s = 0; s < span; s += SECTOR) {
        size_t e = s + SECTOR < span ? s + SECTOR : span;
        bool same = true;
        for (size_t i = s; i < e && same; i++)
            same = content_at(cur, i) == content_at(dur, i);
        unsigned choice = same ? 0 : (unsigned)(rnd(fs) % 3);
        for (size_t i = s; i < e; i++) {
            uint8_t c = content_at(cur, i), d = content_at(dur, i);
            switch (choice) {
            case 0: out.data[i] = c; break;
            case 1: out.data[i] = d; break;
            default: out.data[i] = c == d ? c : (uint8_t)rnd(fs); break;
            }
        }
    }
    out.stored = span;
    out.len = span;
    content_truncate(&out, len);

    content_free(&ino->dur);
    ino->dur = out;
    content_copy(&ino->cur, &ino->dur);
}

void faultfs_crash(struct faultfs *fs, enum faultfs_crash_mode mode)
{
    LOCK(fs);
    /* Power loss closes everything; stale numbers stay invalid (invariant 3). */
    for (size_t i = 0; i < fs->nfiles; i++)
        if (fs->files[i].ino)
            fd_release(fs, fs->fd_base + (int)i, &fs->files[i]);
    fs->fd_base += (int)fs->nfiles;
    fs->nfiles = 0;

    for (size_t i = 0; i < fs->ndirs; i++) {
        struct dir *d = fs->dirs[i];
        for (size_t k = 0; k < d->cur.n; k++)
            d->cur.v[k].ino->links_cur--;
        dentries_clear(&d->cur);
        for (size_t k = 0; k < d->dur.n; k++) {
            dentries_add(&d->cur, d->dur.v[k].name, d->dur.v[k].ino);
            d->dur.v[k].ino->links_cur++;
        }
    }
    gc(fs);
    for (size_t i = 0; i < fs->ninodes; i++) {
        struct inode *ino = fs->inodes[i];
        ino->lock_fd = -1;
        if (mode == CRASH_GARBLE)
            garble(fs, ino);
        else
            content_copy(&ino->cur, &ino->dur);
    }
    clear_faults(fs);
    fs->syncs = fs->writes = 0;
    UNLOCK(fs);
}

int faultfs_corrupt(struct faultfs *fs, const char *path, uint64_t off)
{
    struct loc l;
    struct dir *d;
    struct dentry *e;
    int r;
    LOCK(fs);
    r = resolve(fs, path, &l, &d, &e);
    if (r == 0 && !e)
        r = -ENOENT;
    if (r == 0 && off >= e->ino->cur.len)
        r = -EINVAL;
    if (r == 0) {
        uint8_t b = (uint8_t)~content_at(&e->ino->cur, off);
        content_write(&e->ino->cur, off, &b, 1);
        if (off < e->ino->dur.len) {
            b = (uint8_t)~content_at(&e->ino->dur, off);
            content_write(&e->ino->dur, off, &b, 1);
        }
    }
    UNLOCK(fs);
    return r < 0 ? r : 0;
}

int64_t faultfs_file_size(struct faultfs *fs, const char *path)
{
    struct loc l;
    struct dir *d;
    struct dentry *e;
    int64_t r;
    LOCK(fs);
    r = resolve(fs, path, &l, &d, &e);
    if (r == 0 && !e)
        r = -ENOENT;
    if (r == 0)
        r = (int64_t)e->ino->cur.len;
    UNLOCK(fs);
    return r;
}
