"""Build of the optional native fan-out sender (ccctl/media/native/fanout.c); the rest is setup.cfg.

The extension links Debian's libsrtp2 (libsrtp2-dev, which scripts/setup.sh installs as root
when it is missing). It is optional: without a C compiler or the headers, or with
CCCTL_NATIVE_BUILD=0, the install goes on without it and the fan-out uses the Python path.
"""

import os

from setuptools import Extension, setup

native = [] if os.environ.get("CCCTL_NATIVE_BUILD", "1") == "0" else [
    Extension("ccctl.media.native._fanout", ["ccctl/media/native/fanout.c"], libraries=["srtp2"],
              extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-missing-field-initializers",
                                  "-Wno-unused-parameter"],
              optional=True)]

setup(ext_modules=native)
