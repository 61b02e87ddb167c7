"""Everything the driving node does per message, without ROS: the rclpy node, the ROS-less bag replay and the demo
all drive a ``DrivingSession`` and only differ in where messages and time come from.

The caller delivers messages with the time it runs on (``now_s``: the node's ROS clock, bag time in a replay)
and calls ``tick(now_s)`` from a fixed-rate timer. Nothing here reads a wall clock except for latency
measurement and the weight loader's retry back-off.

Per camera frame (``on_image``): the image is converted, the newest lidar sweep whose stamp is within
``lidar_max_age_s`` of the image stamp is picked (none: the frame runs camera-only and the speed is capped, see
``FramePipeline``), the latest speed is attached, and the pipeline maps the models' decision to a limited
``VehicleCommand`` stamped with the image stamp. A message that cannot be converted is counted (kind
``bad_image``, ``bad_pointcloud``, ...) and the call returns None or False; no method raises on bad input.

Time may jump (a looped or seeked bag, a simulator reset): when ``now_s`` goes backwards or leaps forward by more
than ``clock_jump_s``, or image stamps go back by more than ``camera_timeout_s``, the session forgets its history
(lidar buffer, speed, control rate limits, frame-rate window) and the watchdogs restart, so a jump neither stops
the vehicle spuriously nor crashes anything. A frame stamped less than that before the last one driven on is
out of order, not a new time line: it is dropped (``out_of_order_frame``) and the history stays.

Threads: ``tick`` (the stale-camera stop timer) and ``diagnostics`` may run concurrently with a frame (the
node runs them in callback groups of their own on a multi-threaded executor, so that a slow frame cannot hold
up the stop commands). They never wait for a frame: the session's state is guarded by a lock that is held only
for bookkeeping, never while an image is decoded, a sweep converted or a model runs, and the control mapper has
a lock of its own. Inputs (``on_image``, ``on_lidar``, ``on_speed``, ``on_odometry``, the region topics) are
meant to come from one thread at a time (one callback group). A frame that ends more than ``camera_timeout_s``
after it arrived, when the stop timer has already taken over, is dropped (``late_frame``) rather than
published after the stops. Bundles are loaded by ``HotSwapManager`` in a separate loader process (what is
left in this process runs on its loader thread).

Modules: ``config`` (``DrivingConfig`` and the published names), ``session`` (``DrivingSession``), ``diagnostic``
(diagnostics as plain data), ``locked`` (the thread-safe helpers the session shares between its threads).
"""

from regionadapt_ros.driving_session.config import (
    BACKENDS,
    COMMAND_MSG_TYPES,
    COMMAND_TYPES,
    DROP_KINDS,
    LIDAR_FIELDS,
    LIDAR_GAP_NONE_YET,
    PERCEPTION_TOPICS,
    REORDER_TOLERANCE_S,
    SESSION_STAGES,
    SPEED_SOURCES,
    DrivingConfig,
)
from regionadapt_ros.driving_session.diagnostic import DiagnosticLevel, DiagnosticStatusData
from regionadapt_ros.driving_session.session import DrivingSession, DrivingStats, SensorAges

__all__ = ["BACKENDS", "COMMAND_MSG_TYPES", "COMMAND_TYPES", "DROP_KINDS", "LIDAR_FIELDS", "LIDAR_GAP_NONE_YET",
           "PERCEPTION_TOPICS", "REORDER_TOLERANCE_S", "SESSION_STAGES", "SPEED_SOURCES", "DiagnosticLevel",
           "DiagnosticStatusData", "DrivingConfig", "DrivingSession", "DrivingStats", "SensorAges"]
