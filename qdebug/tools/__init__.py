"""Tools on the TensorFlow side that use the tracer: ``check`` (pre-flight diagnosis), ``fix``
(``fix_search``: layers kept in float by the converter; ``mixed_search``: ops raised to int16 or
float through ai-edge-quantizer's per-op recipe, costed by ``precision``), ``sensitivity``, and
the QAT comparison (``qat``). TensorFlow is imported when a tool runs, not when its module is
imported.
"""
