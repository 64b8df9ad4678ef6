"""What qdebug writes for people and scripts from a trace: the summary, JSON/markdown/CSV
reports, diff rendering, exports, Model Explorer data, notebook tables and plots. Every number
and name is formatted through ``qdebug.output.fmt``. Never imports TensorFlow.
"""
