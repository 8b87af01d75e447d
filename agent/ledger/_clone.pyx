# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Clone files into the artifact store in C, each into an unnamed file linked into place."""

from libc.errno cimport EEXIST, EINVAL, errno
from libc.stdint cimport int32_t, int64_t
from libc.stdio cimport snprintf
from posix.stat cimport fstat, stat, struct_stat
from posix.unistd cimport close

import os

import numpy as np

cdef extern from "<fcntl.h>" nogil:
    int open(const char *path, int flags, ...)
    enum: O_RDONLY
    enum: O_WRONLY
    enum: O_CLOEXEC
    enum: O_TMPFILE
    enum: AT_FDCWD
    enum: AT_SYMLINK_FOLLOW

cdef extern from "<unistd.h>" nogil:
    int linkat(int old_folder, const char *old_path, int new_folder, const char *new_path,
               int flags)

cdef extern from "<sys/ioctl.h>" nogil:
    int ioctl(int descriptor, unsigned long request, ...)

cdef extern from "<linux/fs.h>" nogil:
    enum: FICLONE

# What became of each file (the codes `clone_files` returns).
cdef enum Outcome:
    OUTCOME_CLONED = 0  # its clone is in the store under its name
    OUTCOME_PRESENT = 1  # the store had the name already: nothing was added
    OUTCOME_UNTRUSTED = 2  # its stat was not the vouched one (or none was given): nothing done
    OUTCOME_FAILED = 3  # a system call failed (errno beside it): nothing was left

CLONED = OUTCOME_CLONED
PRESENT = OUTCOME_PRESENT
UNTRUSTED = OUTCOME_UNTRUSTED
FAILED = OUTCOME_FAILED
cdef int FILE_MODE = 0o600


cdef bint _is_vouched(struct_stat *info, const int64_t *key) noexcept nogil:
    return (
        <int64_t>info.st_dev == key[0]
        and <int64_t>info.st_ino == key[1]
        and <int64_t>info.st_size == key[2]
        and <int64_t>info.st_mtim.tv_sec * 1000000000 + info.st_mtim.tv_nsec == key[3]
        and <int64_t>info.st_ctim.tv_sec * 1000000000 + info.st_ctim.tv_nsec == key[4]
    )


cdef int _clone_one(
    const char *source, const char *folder, const char *destination, const int64_t *key,
    int32_t *error
) noexcept nogil:
    cdef struct_stat before, after
    cdef int reader, writer, failure
    if key[0] < 0:
        return OUTCOME_UNTRUSTED
    reader = open(source, O_RDONLY | O_CLOEXEC)
    if reader < 0:
        error[0] = errno
        return OUTCOME_FAILED
    if fstat(reader, &before) != 0 or not _is_vouched(&before, key):
        close(reader)
        return OUTCOME_UNTRUSTED
    writer = open(folder, O_WRONLY | O_TMPFILE | O_CLOEXEC, FILE_MODE)
    if writer < 0:
        error[0] = errno
        close(reader)
        return OUTCOME_FAILED
    if ioctl(writer, FICLONE, reader) != 0:
        error[0] = errno
        close(writer)
        close(reader)
        return OUTCOME_FAILED
    if fstat(reader, &after) != 0 or not _is_vouched(&after, key):
        close(writer)
        close(reader)
        return OUTCOME_UNTRUSTED
    failure = _link_unnamed(writer, destination)
    close(writer)
    close(reader)
    if failure == 0:
        return OUTCOME_CLONED
    if failure == EEXIST:
        return OUTCOME_PRESENT
    error[0] = failure
    return OUTCOME_FAILED


cdef int _link_unnamed(int descriptor, const char *destination) noexcept nogil:
    """Name the unnamed file open as `descriptor` by `linkat` of its /proc link (no privilege
    needed, unlike AT_EMPTY_PATH); 0, or the errno."""
    cdef char link_path[64]
    snprintf(link_path, sizeof(link_path), "/proc/self/fd/%d", descriptor)
    if linkat(AT_FDCWD, link_path, AT_FDCWD, destination, AT_SYMLINK_FOLLOW) == 0:
        return 0
    return errno


def link_unnamed(int descriptor, bytes destination):
    """Name the unnamed file (O_TMPFILE) open as `descriptor` `destination`; False when that
    name exists already, OSError for any other failure."""
    if b"\0" in destination:
        raise OSError(EINVAL, "a path holding a NUL", destination)
    cdef const char *name = destination
    cdef int failure
    with nogil:
        failure = _link_unnamed(descriptor, name)
    if failure == EEXIST:
        return False
    if failure:
        raise OSError(failure, os.strerror(failure), os.fsdecode(destination))
    return True


def clone_files(list sources, list folders, list destinations, int64_t[:, ::1] vouched):
    """Clone each source into an unnamed file in its folder, linked as its destination once
    whole; (outcome codes, errno of each FAILED).

    Only a file whose stat is its row of `vouched` (dev, ino, size, mtime_ns, ctime_ns: the
    stat for which the hash cache vouches for its digest) before and after the clone is taken;
    a row starting with -1 means none. Paths are bytes. A file not CLONED or PRESENT leaves
    nothing behind.
    """
    cdef Py_ssize_t count = len(sources), index
    if (
        len(folders) != count or len(destinations) != count
        or vouched.shape[0] != count or vouched.shape[1] != 5
    ):
        raise ValueError("clone_files needs a folder, a destination and a key row per source")
    outcomes = np.empty(count, dtype=np.int32)
    errors = np.zeros(count, dtype=np.int32)
    cdef int32_t[::1] outcome_view = outcomes
    cdef int32_t[::1] error_view = errors
    cdef const char *source
    cdef const char *folder
    cdef const char *destination
    for index in range(count):
        if b"\0" in sources[index] or b"\0" in folders[index] or b"\0" in destinations[index]:
            outcome_view[index] = OUTCOME_FAILED  # a C string would stop short of it
            error_view[index] = EINVAL
            continue
        source = sources[index]
        folder = folders[index]
        destination = destinations[index]
        with nogil:
            outcome_view[index] = _clone_one(
                source, folder, destination, &vouched[index, 0], &error_view[index]
            )
    return outcomes, errors


def stat_keys(list paths):
    """The stat key (dev, ino, size, mtime_ns, ctime_ns) of each path (bytes), following
    links, as an (n, 5) int64 array; a row of -1 where the path cannot be stat'ed."""
    cdef Py_ssize_t count = len(paths), index
    keys = np.full((count, 5), -1, dtype=np.int64)
    cdef int64_t[:, ::1] key_view = keys
    cdef struct_stat info
    cdef const char *path
    cdef int status
    for index in range(count):
        if b"\0" in paths[index]:
            continue  # a C string would stop short of it
        path = paths[index]
        with nogil:
            status = stat(path, &info)
            if status == 0:
                key_view[index, 0] = <int64_t>info.st_dev
                key_view[index, 1] = <int64_t>info.st_ino
                key_view[index, 2] = <int64_t>info.st_size
                key_view[index, 3] = <int64_t>info.st_mtim.tv_sec * 1000000000 + info.st_mtim.tv_nsec
                key_view[index, 4] = <int64_t>info.st_ctim.tv_sec * 1000000000 + info.st_ctim.tv_nsec
    return keys
