"""MediaPipe's native INFO/WARNING lines are dropped from descriptor 2; everything else
written there (errors, Python's own output) still reaches stderr, in order."""
from __future__ import annotations

import os
import subprocess
import sys

from pipeline.native_logs import NativeChatterFilter, native_chatter_filtered

CHATTER = (
    b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    b"W0000 00:00:1796130198.101301   22309 landmark_projection_calculator.cc:186] Using NORM_RECT without "
    b"IMAGE_DIMENSIONS is only supported for the square ROI. Provide IMAGE_DIMENSIONS or use PROJECTION_MATRIX.\n"
    b"I0000 00:00:1796130198.026577   22309 gl_context.cc:357] GL version: 3.2\n"
)
KEPT = b"E0000 00:00:1796130198.2   22309 graph.cc:10] a real error\n[h264 @ 0x5] decode error\n"


def test_chatter_is_dropped_and_errors_kept(capfd):
    with native_chatter_filtered():
        os.write(2, CHATTER[:60])
        os.write(2, CHATTER[60:] + KEPT)
    os.write(2, b"after\n")
    assert capfd.readouterr().err == (KEPT + b"after\n").decode()


def test_a_filter_is_reusable_and_restores_stderr_after_an_exception(capfd):
    chatter_filter = NativeChatterFilter()
    for _ in range(3):
        with chatter_filter:
            os.write(2, CHATTER)
    try:
        with chatter_filter:
            os.write(2, b"kept before the error\n")
            raise ValueError("inside")
    except ValueError:
        pass
    os.write(2, b"stderr is back\n")
    chatter_filter.close()
    assert capfd.readouterr().err == "kept before the error\nstderr is back\n"


BUFFERED_NATIVE_STREAM = """
import ctypes
from pipeline.native_logs import native_chatter_filtered
libc = ctypes.CDLL(None)
libc.fdopen.restype = ctypes.c_void_p
stream = ctypes.c_void_p(libc.fdopen(2, b"w"))  # a C stream on descriptor 2, fully buffered (not a tty)
with native_chatter_filtered():
    libc.fputs(b"W0000 00:00:1796132664.848611   15824 inference_feedback_manager.cc:114] Feedback\\n", stream)
    libc.fputs(b"E0000 00:00:1796132664.9   15824 graph.cc:1] kept\\n", stream)
libc.fputs(b"after\\n", stream)
libc.fflush(None)
"""


def test_lines_still_buffered_in_a_c_stream_are_filtered_too():
    # MediaPipe's lines reach descriptor 2 through such a buffer: without flushing it inside
    # the filter they came out with the next unfiltered write.
    result = subprocess.run([sys.executable, "-c", BUFFERED_NATIVE_STREAM], capture_output=True, check=True)
    assert result.stderr == b"E0000 00:00:1796132664.9   15824 graph.cc:1] kept\nafter\n"
