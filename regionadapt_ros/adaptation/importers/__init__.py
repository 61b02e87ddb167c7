"""Real recorded data → the on-disk dataset format (adaptation.dataset), preprocessed exactly as served.

- ``import_rosbag``: a rosbag2 drive (camera, optional lidar, speed, and the vehicle's command topic or
  commands derived from odometry) → imitation-learning samples for the decision model (source "rosbag").
- ``import_labelled_frames``: ``images/`` + optional ``lidar/`` + ``labels.csv``/``labels.jsonl`` with any
  subset of the label names (source "labelled_frames").
- ``import_image_folder``: ``<class>/*.png|jpg`` sorted by traffic-light state (source "image_folder").

Each validates all of its input first and writes nothing on a DataError (which names the file and the
problem). The formats are documented in docs/data_formats.md.
"""

from regionadapt_ros.adaptation.importers.common import ImportResult, time_block_splits
from regionadapt_ros.adaptation.importers.frames import import_image_folder, import_labelled_frames
from regionadapt_ros.adaptation.importers.rosbag import RosbagImportConfig, import_rosbag

__all__ = [
    "ImportResult",
    "RosbagImportConfig",
    "import_image_folder",
    "import_labelled_frames",
    "import_rosbag",
    "time_block_splits",
]
