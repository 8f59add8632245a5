"""involution_edu: a hands-on course on involution (Li et al., CVPR 2021), and its library.

Layers, bottom to top::

    shapes      output sizes and argument checks
    reference   NumPy: involution_loops (the oracle), involution_numpy
    functional  PyTorch: involution_unfold (the paper's), involution (memory-lean default)
    module      Involution, the paper-compatible nn.Module
    paper       the paper's own module, made runnable, as ground truth
"""

from .functional import involution, involution_unfold
from .module import Involution
from .reference import involution_loops, involution_numpy
from .shapes import output_size

__all__ = [
    "Involution",
    "involution",
    "involution_unfold",
    "involution_loops",
    "involution_numpy",
    "output_size",
]

__version__ = "0.1.0"
