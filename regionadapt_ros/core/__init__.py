"""ROS-free, torch-free core: message conversion, geofences, bundles, control mapping, watchdogs, timing."""
