/* Path and file-name helpers, written once: joining a directory and a name, the directory,
 * base name and extension of a path, suffix tests, and whether a regular file is there. */
#ifndef SP_UTIL_PATH_H
#define SP_UTIL_PATH_H

/* "dir/name", malloc'd; NULL when out of memory. */
char *sp__path_join(const char *dir, const char *name);

/* Directory part of path ("." when there is none, "/" for a file in the root); malloc'd, NULL
 * when out of memory. */
char *sp__dir_of(const char *path);

/* What follows the last '/' of path (path itself when it has none). */
const char *sp__base_name(const char *path);

/* The extension of path's base name: a pointer to its last '.', or NULL when it has none. */
const char *sp__path_ext(const char *path);

/* 1 if s ends with suffix. */
int sp__ends_with(const char *s, const char *suffix);

/* 1 if path is (or links to) a regular file. */
int sp__is_file(const char *path);

#endif
