# `cpack -G DEB` (in the build directory): a Debian package of the install above, for /usr.
# Its library dependencies are computed by dpkg-shlibdeps from what the installed binary and
# library link (Debian's package names and minimum versions: libopenmpi3, libopenblas0,
# libhdf5-103-1, libjansson4, libpcre2-8-0, libicu72, libc6 on Debian 12); what the scripts run
# is recommended. docs/install.md, "Debian package".
set(CPACK_PACKAGE_NAME softprompt)
set(CPACK_PACKAGE_VENDOR "softprompt")
# Who builds the package: a site sets its own (-DSP_DEB_MAINTAINER="Name <address>").
set(SP_DEB_MAINTAINER "softprompt maintainers <softprompt@localhost>" CACHE STRING
    "the Maintainer field of the Debian package")
set(CPACK_PACKAGE_CONTACT "${SP_DEB_MAINTAINER}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
  "prompt tuning of frozen Hugging Face language models on CPU clusters")
set(CPACK_PACKAGE_DESCRIPTION
  "softprompt trains soft prompts (Lester et al. 2021) for frozen GPT-2, Llama and Qwen2 models on CPUs, with MPI data parallelism, HDF5 datasets and checkpoints, Slurm job scripts that survive time limits, and PEFT-compatible adapters. This package holds the command, the softprompt-* scripts, the Slurm job scripts, a demo model, the C library (libsoftprompt.so, headers, pkg-config and CMake files) and Lmod/Tcl modulefiles.")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_RESOURCE_FILE_LICENSE ${PROJECT_SOURCE_DIR}/LICENSE)
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION science)
# Stripped binaries, as Debian ships them (the build tree keeps the debugging information).
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# A shared library: a shlibs file, and ldconfig triggers on install and removal.
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS ON)
# The scripts: bash (submit, job scripts), python3 (sweep-collect, plot); mpirun, gnuplot (plot),
# curl (get-model) and Slurm's client commands are recommended.
set(CPACK_DEBIAN_PACKAGE_DEPENDS "bash, python3")
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "openmpi-bin, curl, gnuplot-nox, slurm-client")
# Building against libsoftprompt with pkg-config needs the dependencies' own .pc files.
set(CPACK_DEBIAN_PACKAGE_SUGGESTS
  "lmod | environment-modules, pkg-config, libopenblas-dev, libjansson-dev, libpcre2-dev, libicu-dev, libopenmpi-dev, libhdf5-dev")
include(CPack)
