"""The replay report for people: a marker per frame when there are few, camera-only frames marked, and the
route map and page say when the bag has no GNSS."""

from __future__ import annotations

from regionadapt_ros.replay_report import FrameRecord, ReplayLog, commands_figure, write_report


def frames(n: int, lidar_every: int = 1) -> list[FrameRecord]:
    return [FrameRecord(0.1 * i, "base", "base@v1", 0.01 * i, 0.5, 5.0, 4.0, False, {"total": 1.0}, False,
                        lidar_used=i % lidar_every == 0) for i in range(n)]


def test_few_frames_get_a_marker_each_and_many_do_not():
    import matplotlib.pyplot as plt

    few = commands_figure(ReplayLog(frames=frames(5)))
    many = commands_figure(ReplayLog(frames=frames(300)))
    try:
        assert few.axes[0].lines[0].get_marker() == "o"
        assert many.axes[0].lines[0].get_marker() in ("None", None, "")
    finally:
        plt.close(few)
        plt.close(many)


def test_camera_only_frames_are_marked_when_some_frames_had_lidar():
    import matplotlib.pyplot as plt

    fig = commands_figure(ReplayLog(frames=frames(20, lidar_every=2)))
    try:
        marked = fig.axes[0].collections[0].get_offsets()
        assert len(marked) == 10                       # the frames without lidar
    finally:
        plt.close(fig)


def test_a_bag_without_gnss_says_so(tmp_path):
    log = ReplayLog(frames=frames(5), has_gnss=False, camera_only=[(0.1, "no lidar topic in the bag")])
    page = write_report(log, tmp_path, "Replay", summary={"frames": 5, "report": None, "duration_s": 0.4999999})
    html = page.read_text()
    assert "no GNSS in this bag" in html and "1 × no lidar topic in the bag" in html
    assert "report</b>: None" not in html and "0.4999999" not in html and "0.5" in html
