"""openmoshi: a from-scratch PyTorch implementation of Kyutai's Moshi.

Importing the package has no side effects; subpackages are imported on demand.
"""

__version__ = "0.1.0"
