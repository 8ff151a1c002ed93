"""The ``lorank`` command line: a thin layer over the library (see :mod:`lorank.cli.main`)."""
