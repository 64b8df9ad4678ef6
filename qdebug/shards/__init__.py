"""Shards of one trace run, needing no TensorFlow: the K-th of N slices of the samples
(``slicing``), shard traces opened and checked to be one run (``shard_file``) and merged into
the trace of the whole run (``merge``), and the N shards run as local processes (``local``) or
Ray tasks (``ray_tasks``).

A worker is ``python -m qdebug trace … --shard K/N`` in its own interpreter: only that process
imports TensorFlow, never the one that starts the workers and merges their traces. Reading the
command line for them is the CLI's (``qdebug.cli.sharding``).
"""
