"""The run report as a library: ``build.build_report(workdir)`` writes ``WORKDIR/report.html``.

``html`` (escaping, embedded images, the page), ``plots`` (matplotlib figures as PNG bytes), ``files``
(reading the workdir, local or gs://), one module per group of sections (``scores``, ``models``,
``iterations``, ``outputs``) and ``build`` (the page from its sections). ``python -m wm.report`` is the binary.
"""
