import os
import sys

# Two cores here: one thread per test process keeps the suite predictable.
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
