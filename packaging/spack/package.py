# Spack recipe of softprompt (docs/install.md, "Spack"), written to Spack's packaging guide
# (CMakePackage, Spack >= 0.23). Spack cannot run where softprompt is developed, so this recipe
# has not been run by Spack: it asks only for what `cmake --install` guarantees and
# tests/integration/test_install.sh checks (bin/softprompt and the softprompt-* scripts,
# lib/libsoftprompt.so, lib/pkgconfig/softprompt.pc, lib/cmake/softprompt, share/softprompt).
#
# Use: copy this file into a Spack package repository as packages/softprompt/package.py. There is
# no public release archive to fetch here; build a checkout with
#   spack develop --path /path/to/softprompt softprompt@=0.1.0 && spack install
# (in a Spack environment), or add `git = "<your site's repository>"` and
# `version("0.1.0", tag="v0.1.0")` below.
from spack.package import *


class Softprompt(CMakePackage):
    """Prompt tuning (Lester et al. 2021) of frozen Hugging Face language models on CPU clusters:
    MPI data parallelism, HDF5 datasets and checkpoints, Slurm job scripts that survive time
    limits, PEFT-compatible adapters; a C library (libsoftprompt) with pkg-config and CMake
    files."""

    license("Apache-2.0")

    depends_on("c", type="build")
    depends_on("cmake@3.18:", type="build")
    depends_on("pkgconfig", type="build")
    # CMakeLists.txt configures the unit tests too (Check), and makes the man pages with help2man.
    depends_on("check", type="build")
    depends_on("help2man", type="build")

    depends_on("mpi")
    # <cblas.h>, openblas.pc and openblas_set_num_threads: OpenBLAS itself, not any BLAS.
    depends_on("openblas")
    # The serial HDF5 C library, as tested (each rank opens the files it reads on its own).
    depends_on("hdf5~mpi")
    depends_on("jansson")
    depends_on("pcre2")
    depends_on("icu4c")
    depends_on("libzip")  # KoboldAI soft-prompt zips (export --format kobold)

    # The scripts: bash (softprompt-submit, the job scripts), python3 (softprompt-sweep-collect,
    # softprompt-plot). Slurm's commands, gnuplot and curl are the site's.
    depends_on("bash", type="run")
    depends_on("python@3.8:", type="run")

    sanity_check_is_file = [
        "bin/softprompt",
        "bin/softprompt-submit",
        "lib/libsoftprompt.so",
        "lib/pkgconfig/softprompt.pc",
        "lib/cmake/softprompt/softprompt-config.cmake",
        "share/softprompt/slurm/lib/softprompt-job.sh",
    ]

    def cmake_args(self):
        # libdir "lib", as the modulefiles, softprompt.pc and the job scripts expect it.
        return [self.define("CMAKE_INSTALL_LIBDIR", "lib")]

    def setup_run_environment(self, env):
        # What softprompt's own modulefile sets beside PATH, MANPATH, PKG_CONFIG_PATH and
        # CMAKE_PREFIX_PATH (which Spack's generated modules set from the prefix's layout).
        env.set("SOFTPROMPT_HOME", self.prefix)

    def test_info_demo_model(self):
        """softprompt info on the installed demo model"""
        softprompt = which(self.prefix.bin.softprompt)
        out = softprompt(
            "info", join_path(self.prefix.share.softprompt.models, "demo-gpt2"), output=str
        )
        assert "GPT2LMHeadModel" in out
