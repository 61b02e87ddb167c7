"""Driving scores as the CARLA leaderboard 2.0 computes them, without ROS and without a map: the arithmetic
(``leaderboard``), the route (``route``), the per-tick criteria (``criteria``) and the reader of bags recorded
next to the CARLA ROS bridge (``carla_bag``). The closed-loop simulator and ``regionadapt score`` share them."""
