/* `softprompt info` for HDF5 files: datasets (and checkpoints), told apart by the root
 * attribute "format". */
#ifndef SP_CLI_INFO_DATASET_H
#define SP_CLI_INFO_DATASET_H

/* True if path is a regular file starting with the HDF5 signature. */
int sp__info_is_hdf5(const char *path);

/* Describes an HDF5 file on stdout; errors go to stderr as "softprompt info: ...".
 * Returns the exit status (0, or 1 when the file is unreadable or of an unknown kind). */
int sp__info_h5(const char *path);

#endif
