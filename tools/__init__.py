"""Tools beside the lessons: the benchmark, the stress scenarios and the workload they share.

Run them from the project folder as modules: ``python -m tools.bench``, ``python -m tools.stress``.
"""
