"""Every private attribute of another library that fsdf touches, one small module per library.

Private names change without notice, so each is used only here, with a reason, and
tests/test_library_internals.py checks that each still exists and behaves as fsdf relies on with the
installed version; pyproject.toml bounds these libraries below their next untested minor release.
"""
