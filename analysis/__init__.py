"""Scaling-law analysis, independent of torch: fit laws with intervals, find the compute-optimal
frontier, draw plots and write reports from any table with columns for N, D, C and a metric.

Modules: ``laws`` (law forms), ``lbfgs`` (batched L-BFGS), ``fitting`` (multi-start Huber fits),
``bootstrap`` (intervals), ``extrapolation`` (held-out check), ``frontier`` (approaches 1-3),
``data`` (table checks), ``study`` (everything for one table), ``plots``, ``report``, ``cli``.
"""
