"""Tools on the TensorFlow side that use the tracer: ``check`` (pre-flight diagnosis), ``fix``
and ``sensitivity`` (``fix_search``), and the QAT comparison (``qat``). TensorFlow is imported
when a tool runs, not when its module is imported.
"""
