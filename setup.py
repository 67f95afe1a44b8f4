"""For Beam's `--setup_file ./setup.py`: the stager builds this project's sdist with `python -m
build` where that is installed, else with `python setup.py sdist`, which needs this file. The
package's metadata, contents and dependencies are all in pyproject.toml."""

from setuptools import setup

setup()
