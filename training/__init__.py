"""Training for the wastesort student: teacher, meta (first) training, distillation (second), evaluation, export.

A sibling of the daemon: the daemon never imports this package.
"""
