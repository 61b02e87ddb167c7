"""regionadapt_ros: drive with perception and decision networks fine-tuned for the region the vehicle is in."""

__version__ = "0.1.0"
