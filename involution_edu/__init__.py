"""involution_edu: a hands-on course on involution (Li et al., CVPR 2021), and its library.

Layers, bottom to top (imports only flow downwards)::

    shapes       output sizes and argument checks
    reference    NumPy: involution_loops (the oracle), involution_numpy
    native       an optional compiled C++ kernel (built on first use when a compiler exists)
    functional   PyTorch: involution_unfold (the paper's), involution (memory-lean default)
    module       Involution, the paper-compatible nn.Module
    paper        the paper's own module, made runnable, as ground truth
    resnet       bottleneck scaffolding and the ResNet baselines
    rednet       RedNet-26 ... RedNet-152 with the paper's state_dict names
    counting     parameters and FLOPs (multiply-adds, or mmcv's rules)
    memory       extra peak memory of a computation
    data         offline data: a photo and handwritten digits from scikit-learn
    training     small nets, a deterministic training loop, evaluation
    plotting     figures for the notebooks
    exercises    checkers for the notebooks' exercises
    bench        ``python -m involution_edu.bench``
    student      ``python -m involution_edu.student``: student copies of the notebooks
"""

from .functional import involution, involution_unfold
from .fuse import fuse_for_inference
from .module import Involution
from .rednet import rednet26, rednet38, rednet50, rednet101, rednet152
from .reference import involution_loops, involution_numpy
from .shapes import output_size

__all__ = [
    "Involution",
    "fuse_for_inference",
    "involution",
    "involution_unfold",
    "involution_loops",
    "involution_numpy",
    "output_size",
    "rednet26",
    "rednet38",
    "rednet50",
    "rednet101",
    "rednet152",
]

__version__ = "0.1.0"
