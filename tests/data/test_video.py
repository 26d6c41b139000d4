"""Reading frames: a long video streams in bounded memory, a cut-off one withholds its last frame.
"""

from __future__ import annotations

import tracemalloc

from mer_core.data.video import VideoReader, count_video_frames


def test_a_long_video_streams_in_bounded_memory(corpus):
    """Four windows spread over 400 frames: only the frames of the window being filled are held."""
    groups = [[start + 2 * k for k in range(4)] for start in (0, 130, 260, 390)]
    frame_bytes = 128 * 128 * 3
    tracemalloc.start()
    try:
        with VideoReader(corpus.macro / "videos" / "long.avi") as reader:
            seen = [k for k, frames in reader.frame_groups(groups)]
            assert reader.frames_read == max(groups[-1]) + 1
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seen == [0, 1, 2, 3]
    assert peak < 20 * frame_bytes, f"peak {peak / frame_bytes:.0f} frames held while streaming 400"


def test_a_cut_off_video_withholds_its_last_decoded_frame(corpus):
    from mer_core.data.video import VideoReader

    cut = corpus.macro / "videos" / "truncated.avi"
    decoded, _ = count_video_frames(cut)
    with VideoReader(cut) as reader:
        numbers = [n for n, _ in reader.intact_frames()]
    assert numbers == list(range(decoded - 1))  # the possibly half-garbage last frame is left out
    whole = corpus.macro / "videos" / "long.avi"
    with VideoReader(whole) as reader:
        assert len(list(reader.intact_frames())) == count_video_frames(whole)[0]
