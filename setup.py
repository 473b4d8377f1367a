"""The optional C walk (``pytest_noplusone._walk``); everything else is in pyproject.toml.

It is built for CPython 3.11 and 3.12 only, and a failed build is not an error: the plugin then
uses its pure-Python walk, which gives the same results at a higher cost per statement.
"""

import sys

from setuptools import Extension, setup

ext_modules = []
if sys.implementation.name == "cpython" and (3, 11) <= sys.version_info[:2] <= (3, 12):
    ext_modules.append(
        Extension("pytest_noplusone._walk", ["pytest_noplusone/_walk.c"], optional=True)
    )

setup(ext_modules=ext_modules)
