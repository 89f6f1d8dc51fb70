"""Scripts that measure aipflow and write ``benchmarks/results/`` (with provenance: commit, argv, versions, hardware).

Run each as a module from the repository root, e.g. ``python -m benchmarks.optim_step``: the package's helpers
(``benchmarks._provenance``, ``benchmarks._runs``) are imported by name, and nothing here edits ``sys.path`` (a
script that put its own folder on the path once shadowed the ``kernels`` package that transformers imports).
"""
