"""Pure analysis of traces: segments, culprit ranking, accuracy, the comparison of two traces.

numpy and the store only: no TensorFlow, no terminal UI.
"""
