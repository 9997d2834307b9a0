"""Build of the optional native fan-out sender (ccctl/media/native/fanout.c); the rest is setup.cfg.

It needs a C compiler and Python's headers (scripts/setup.sh installs them as root when they are
missing) and no other library: it calls the libsrtp that pylibsrtp bundles. It is optional:
without them, or with CCCTL_NATIVE_BUILD=0, the install goes on without it and the fan-out uses
the Python path.
"""

import os

from setuptools import Extension, setup

native = [] if os.environ.get("CCCTL_NATIVE_BUILD", "1") == "0" else [
    Extension("ccctl.media.native._fanout", ["ccctl/media/native/fanout.c"],
              extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-missing-field-initializers",
                                  "-Wno-unused-parameter"],
              optional=True)]

setup(ext_modules=native)
