"""Exercise checkers, one module per notebook; the shared machinery is in :mod:`.framework`.

In a notebook, call the checker in the cell after the exercise, e.g.::

    from involution_edu.exercises.loops import check_involution_loops
    check_involution_loops(involution_loops_student)

Every checker runs the student's function on a table of cases, prints one verdict (what is
wrong, for which case, expected vs got), returns ``True``/``False`` and never raises because
of the student's mistake. All checkers are also importable from this package.

=====================  =========================================================
module                 notebook
=====================  =========================================================
``convolution``        01 · convolution recap and the idea
``loops``              02 · involution as explicit loops
``vectorize``          03 · sliding windows and unfold
``kernel_generation``  04 · kernel generation
``module``             05 · the full module
``rednet``             06 · RedNet
``training``           07 · training on real data
``performance``        08 · making it fast
``attention``          09 · going further
=====================  =========================================================
"""

from .attention import check_attention_kernels, check_window_softmax
from .convolution import check_conv2d_loops, check_depthwise_as_involution, check_involution_param_count
from .framework import Case, compare, run_cases
from .kernel_generation import check_generate_kernels, check_generated_kernel_elements, check_reshape_kernels
from .loops import check_involution_loops, check_output_size, check_paper_channel_order
from .module import (
    check_group_of_channel,
    check_involution_forward,
    check_involution_madds,
    check_involution_output_shape,
)
from .performance import check_arithmetic_intensity, check_bytes_moved, check_involution_offsets
from .rednet import check_bottleneck_params, check_involution_flops, check_stage_shapes
from .training import check_accuracy, check_clip_by_global_norm, check_confusion_matrix
from .vectorize import check_involution_unfold, check_unfold_memory_bytes, check_unfold_shape

__all__ = [name for name in dir() if name.startswith("check_")] + ["Case", "compare", "run_cases"]
