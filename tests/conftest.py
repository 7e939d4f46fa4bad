import os

# Tests compare bits across thread counts themselves; keep TensorFlow's and
# XLA's start-up chatter out of the logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
