"""nmsim: which N:M activation-sparsity patterns should an accelerator support, with evidence.

N:M always means *keep N of every M consecutive values along the reduction dimension K*, per token.
"""

__version__ = "0.1.0"
