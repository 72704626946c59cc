import gc
import sys

from hicom.cli import main

code = main()
# The process ends here: the interpreter's shutdown would run full collections over every object that torch,
# transformers, DeepSpeed and MLflow made (some 500,000), 1.1-1.4 s of each stage's exit (docs/timings.md).
# Frozen objects are skipped by those collections; reference counting still frees and closes them as before.
gc.freeze()
sys.exit(code)
