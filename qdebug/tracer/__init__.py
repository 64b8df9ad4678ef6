"""The tracer: the one part of qdebug that imports TensorFlow, Keras and LiteRT (with the tools
above it, which trace through it). It loads and converts the model, matches layers to tensors,
runs both sides batch by batch and writes the trace. What needs no TensorFlow lives below it:
shards and their merge in ``qdebug.shards``, worst samples and culprits in ``qdebug.analysis``,
progress lines in ``qdebug.progress``.
"""
