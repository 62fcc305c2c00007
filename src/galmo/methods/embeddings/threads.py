"""Thread limits for the scikit-learn fits of the embeddings method."""

from __future__ import annotations

def single_threaded_blas(fn):
    """Run ``fn`` with BLAS/OpenMP limited to one thread: torch and numpy each bring an OpenBLAS, and
    with both (plus OpenMP) spinning on few shared cores small scikit-learn fits ran ~50× slower."""
    import functools

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            return fn(*a, **kw)

    return wrapper
