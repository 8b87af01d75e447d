# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Walk a data folder in C: one lstat per entry, names sorted per folder, without the GIL."""

from libc.errno cimport ENOENT, errno
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.stdlib cimport free, malloc, qsort, realloc
from libc.string cimport memcpy, memset, strcmp, strlen
from posix.fcntl cimport AT_SYMLINK_NOFOLLOW, O_DIRECTORY, O_RDONLY, openat
from posix.stat cimport S_ISDIR, S_ISLNK, S_ISREG, fstatat, struct_stat
from posix.unistd cimport close

import numpy as np

cdef extern from "<fcntl.h>" nogil:
    enum: O_CLOEXEC
    enum: O_NOFOLLOW
    enum: AT_FDCWD

cdef extern from "<dirent.h>" nogil:
    ctypedef struct DIR:
        pass
    struct dirent:
        char d_name[256]
    DIR *fdopendir(int fd)
    dirent *readdir(DIR *dirp)
    int closedir(DIR *dirp)
    int dirfd(DIR *dirp)

# Kinds of entry reported to Python.
KIND_FILE = 0
KIND_SYMLINK = 1
KIND_OTHER = 2
# An entry that could not be stat'ed, or a folder that could not be opened: its stat fields are
# zero and `size` holds the errno.
KIND_UNREADABLE = 3

# One row per entry; the same layout as ENTRY_DTYPE in agent.data.scan (64 bytes).
cdef struct Entry:
    uint64_t dev
    uint64_t ino
    int64_t size
    int64_t mtime_ns
    int64_t ctime_ns
    int64_t path_offset
    int32_t path_length
    int32_t kind
    int64_t mode

cdef struct Scan:
    Entry *entries
    size_t n_entries
    size_t entries_capacity
    char *blob            # every path, NUL-terminated, in walk order
    size_t blob_length
    size_t blob_capacity
    char *path            # scratch: the current relative path
    size_t path_capacity
    int error_errno       # first error, with its path in error_path
    char *error_path
    int out_of_memory


cdef int grow(void **buffer, size_t *capacity, size_t needed, size_t item) noexcept nogil:
    cdef size_t new_capacity = capacity[0] if capacity[0] > 0 else 1024
    cdef void *grown
    if needed <= capacity[0]:
        return 0
    while new_capacity < needed:
        new_capacity *= 2
    grown = realloc(buffer[0], new_capacity * item)
    if grown == NULL:
        return -1
    buffer[0] = grown
    capacity[0] = new_capacity
    return 0


cdef int compare_names(const void *a, const void *b) noexcept nogil:
    return strcmp((<const char **> a)[0], (<const char **> b)[0])


cdef void record_error(Scan *scan, size_t path_length, int error_number) noexcept nogil:
    if scan.error_errno != 0:
        return
    scan.error_errno = error_number
    scan.error_path = <char *> malloc(path_length + 1)
    if scan.error_path != NULL:
        memcpy(scan.error_path, scan.path, path_length)
        scan.error_path[path_length] = 0


cdef int append_entry(Scan *scan, size_t path_length, struct_stat *st, int32_t kind) noexcept nogil:
    cdef Entry *entry
    if grow(<void **> &scan.entries, &scan.entries_capacity, scan.n_entries + 1, sizeof(Entry)):
        return -1
    if grow(<void **> &scan.blob, &scan.blob_capacity, scan.blob_length + path_length + 1, 1):
        return -1
    entry = &scan.entries[scan.n_entries]
    entry.dev = st.st_dev
    entry.ino = st.st_ino
    entry.size = st.st_size
    entry.mtime_ns = <int64_t> st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec
    entry.ctime_ns = <int64_t> st.st_ctim.tv_sec * 1000000000 + st.st_ctim.tv_nsec
    entry.path_offset = scan.blob_length
    entry.path_length = <int32_t> path_length
    entry.kind = kind
    entry.mode = st.st_mode
    memcpy(scan.blob + scan.blob_length, scan.path, path_length)
    scan.blob[scan.blob_length + path_length] = 0
    scan.blob_length += path_length + 1
    scan.n_entries += 1
    return 0


cdef int append_unreadable(Scan *scan, size_t path_length, int error_number) noexcept nogil:
    cdef struct_stat st
    memset(&st, 0, sizeof(st))
    st.st_size = error_number
    return append_entry(scan, path_length, &st, 3)


cdef int visit(Scan *scan, int folder_fd, const char *name, size_t prefix_length) noexcept nogil:
    """Record `name` (in the folder open as `folder_fd`), walking into it when it is a folder."""
    cdef struct_stat st
    cdef int child_fd
    cdef size_t name_length = strlen(name)
    cdef size_t path_length = prefix_length + name_length
    cdef int32_t kind
    if grow(<void **> &scan.path, &scan.path_capacity, path_length + 2, 1):
        scan.out_of_memory = 1
        return -1
    memcpy(scan.path + prefix_length, name, name_length)
    scan.path[path_length] = 0
    if fstatat(folder_fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0:
        if errno == ENOENT:  # removed since it was listed: it is simply not there any more
            return 0
        if append_unreadable(scan, path_length, errno):
            scan.out_of_memory = 1
            return -1
        return 0
    if S_ISDIR(st.st_mode):
        child_fd = openat(folder_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        if child_fd < 0:
            if errno == ENOENT:
                return 0
            # An unreadable folder is reported as one entry; the rest of the walk goes on.
            if append_unreadable(scan, path_length, errno):
                scan.out_of_memory = 1
                return -1
            return 0
        scan.path[path_length] = c'/'
        return walk(scan, child_fd, path_length + 1, NULL)
    kind = 0 if S_ISREG(st.st_mode) else 1 if S_ISLNK(st.st_mode) else 2
    if append_entry(scan, path_length, &st, kind):
        scan.out_of_memory = 1
        return -1
    return 0


cdef int walk(Scan *scan, int folder_fd, size_t prefix_length,
              const char *skip_name) noexcept nogil:
    """Walk the folder open as `folder_fd` (closed here); scan.path[:prefix_length] names it."""
    cdef DIR *folder = fdopendir(folder_fd)
    cdef dirent *item
    cdef char *names = NULL
    cdef size_t names_length = 0, names_capacity = 0, name_length, i
    cdef char **sorted_names = NULL
    cdef size_t n_names = 0, sorted_capacity = 0
    cdef size_t *offsets = NULL
    cdef size_t offsets_capacity = 0
    cdef int status = 0
    cdef const char *name
    if folder == NULL:
        record_error(scan, prefix_length, errno)
        close(folder_fd)
        return -1
    # Read every name first, so that the folder is walked in sorted order.
    while True:
        item = readdir(folder)
        if item == NULL:
            break
        name = item.d_name
        if name[0] == c'.' and (name[1] == 0 or (name[1] == c'.' and name[2] == 0)):
            continue
        if skip_name != NULL and strcmp(name, skip_name) == 0:
            continue
        name_length = strlen(name)
        if (grow(<void **> &names, &names_capacity, names_length + name_length + 1, 1)
                or grow(<void **> &offsets, &offsets_capacity, n_names + 1, sizeof(size_t))):
            scan.out_of_memory = 1
            status = -1
            break
        memcpy(names + names_length, name, name_length + 1)
        offsets[n_names] = names_length
        names_length += name_length + 1
        n_names += 1
    if status == 0 and n_names > 0:
        sorted_names = <char **> malloc(n_names * sizeof(char *))
        if sorted_names == NULL:
            scan.out_of_memory = 1
            status = -1
        else:
            for i in range(n_names):
                sorted_names[i] = names + offsets[i]
            qsort(sorted_names, n_names, sizeof(char *), compare_names)
    i = 0
    while status == 0 and i < n_names:
        status = visit(scan, dirfd(folder), sorted_names[i], prefix_length)
        i += 1
    free(sorted_names)
    free(offsets)
    free(names)
    closedir(folder)
    return status


ENTRY_FIELDS = [
    ("dev", "<u8"),
    ("ino", "<u8"),
    ("size", "<i8"),
    ("mtime_ns", "<i8"),
    ("ctime_ns", "<i8"),
    ("path_offset", "<i8"),
    ("path_length", "<i4"),
    ("kind", "<i4"),
    ("mode", "<i8"),
]


cdef void init_scan(Scan *scan) noexcept nogil:
    scan.entries = NULL
    scan.n_entries = 0
    scan.entries_capacity = 0
    scan.blob = NULL
    scan.blob_length = 0
    scan.blob_capacity = 0
    scan.path = NULL
    scan.path_capacity = 0
    scan.error_errno = 0
    scan.error_path = NULL
    scan.out_of_memory = 0


cdef void free_scan(Scan *scan) noexcept nogil:
    free(scan.entries)
    free(scan.blob)
    free(scan.path)
    free(scan.error_path)


cdef object scan_result(Scan *scan, int status, bytes root):
    """Turn a finished walk into ``(blob, entries)``, or raise its error."""
    if scan.out_of_memory:
        raise MemoryError("out of memory while walking " + root.decode(errors="replace"))
    if status == -2:
        raise OSError(scan.error_errno, "cannot open folder", root.decode(errors="surrogateescape"))
    if status != 0:
        where = b"" if scan.error_path == NULL else <bytes> scan.error_path
        raise OSError(scan.error_errno, "cannot read", where.decode(errors="surrogateescape"))
    entries = np.empty(scan.n_entries, dtype=np.dtype(ENTRY_FIELDS))
    if scan.n_entries:
        memcpy(<void *> <size_t> entries.ctypes.data, scan.entries, scan.n_entries * sizeof(Entry))
    blob = b"" if scan.blob_length == 0 else scan.blob[:scan.blob_length]
    return blob, entries


def scan_folder(bytes root, bytes prefix=b"", skip_name=None):
    """Walk `root` and return ``(blob, entries)`` for every non-folder entry below it.

    Parameters
    ----------
    root : bytes
        The folder, as a file-system path.
    prefix : bytes
        Prepended to every reported path (empty, or a relative folder path ending in ``/``).
    skip_name : bytes or None
        A name skipped directly inside `root` (the version-control folder), or None.

    Returns
    -------
    blob : bytes
        Relative paths, each NUL-terminated, in walk order (names sorted byte-wise per folder).
    entries : numpy.ndarray
        Structured array with the fields of ``ENTRY_FIELDS``; ``kind`` is 0 for a regular file,
        1 for a symbolic link (not followed), 2 for anything else and 3 for an entry that could
        not be stat'ed or a folder that could not be opened (its ``size`` is the errno).

    Raises
    ------
    OSError
        With the errno and the path when `root` itself cannot be opened.
    """
    cdef Scan scan
    cdef int root_fd
    cdef int status
    cdef const char *root_c = root
    cdef const char *prefix_c = prefix
    cdef const char *skip_c = NULL
    cdef size_t prefix_length = len(prefix)
    if skip_name is not None:
        skip_c = <bytes> skip_name
    init_scan(&scan)
    try:
        with nogil:
            root_fd = openat(AT_FDCWD, root_c, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            if root_fd < 0:
                status = -2
                scan.error_errno = errno
            elif grow(<void **> &scan.path, &scan.path_capacity, 4096 + prefix_length, 1) == 0:
                memcpy(scan.path, prefix_c, prefix_length)
                scan.path[prefix_length] = 0
                status = walk(&scan, root_fd, prefix_length, skip_c)
            else:
                close(root_fd)
                scan.out_of_memory = 1
                status = -1
        return scan_result(&scan, status, root)
    finally:
        free_scan(&scan)


def scan_names(bytes root, list names):
    """Like `scan_folder`, for the given entries of `root` only, in the order given.

    Parameters
    ----------
    root : bytes
        The folder holding the entries.
    names : list of bytes
        Names of entries directly inside `root` (files or folders), already sorted.
    """
    cdef Scan scan
    cdef int root_fd
    cdef int status = 0
    cdef const char *root_c = root
    cdef size_t n_names = len(names), i
    cdef const char **names_c = <const char **> malloc((n_names + 1) * sizeof(char *))
    if names_c == NULL:
        raise MemoryError()
    for i in range(n_names):
        names_c[i] = <bytes> names[i]
    init_scan(&scan)
    try:
        with nogil:
            root_fd = openat(AT_FDCWD, root_c, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            if root_fd < 0:
                status = -2
                scan.error_errno = errno
            else:
                i = 0
                while status == 0 and i < n_names:
                    status = visit(&scan, root_fd, names_c[i], 0)
                    i += 1
                close(root_fd)
        return scan_result(&scan, status, root)
    finally:
        free(names_c)
        free_scan(&scan)
