from setuptools import setup

setup(cffi_modules=["mtcp_loop/_build.py:ffibuilder"])
