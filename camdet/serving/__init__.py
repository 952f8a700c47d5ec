"""Serving the ensemble.

:mod:`.server` starts ``tritonserver``, :mod:`.portable` derives the portable repository,
:mod:`.repository` reads and checks configs, :mod:`.security` says what a server exposes.
"""
