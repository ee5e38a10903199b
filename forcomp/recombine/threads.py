"""OpenCV's thread pool kept out of the hot path, and what each DataLoader worker sets up.

The CPU kernels call OpenCV on pixel rows small enough to run on the calling thread, but OpenCV
may still hand work to its pool (one thread per core, whatever ``torch.set_num_threads`` says).
On a machine whose cores are busy (DataLoader workers, other jobs) each hand-off waits for a pool
thread to be scheduled: a whole CPU loader ran 1.1-1.3x faster with the pool off (measured side by
side on a loaded 2-core machine). :func:`opencv_serial` turns it off for the duration of a kernel
call and restores the caller's setting; :func:`init_worker` is the loader's ``worker_init_fn``.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def opencv_serial() -> Iterator[None]:
    """Run OpenCV on the calling thread inside the ``with`` block; the caller's thread count after.

    Cheap (well under a microsecond) when nothing between two blocks uses OpenCV's pool.
    """
    import cv2

    n = cv2.getNumThreads()
    if n == 1:
        yield
        return
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(n)


def init_worker(worker_id: int) -> None:
    """A loader worker's set-up: OpenCV on one thread (as the DataLoader sets torch's), and the
    objects inherited from the parent process frozen out of the garbage collector: a full
    collection walks all of them (torch and torchvision alone make 300k+; 0.2 s a pass, measured)
    and writes their reference counts, copying pages shared with the parent."""
    import cv2

    cv2.setNumThreads(1)
    gc.freeze()
