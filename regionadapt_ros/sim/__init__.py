"""Closed-loop simulation in the synthetic world: the product drives the car, the CARLA leaderboard's criteria
score it. ``world`` (the simulator), ``routes`` (seeded routes per region), ``agents`` (the product through
``DrivingSession``, the rule-based expert), ``runner`` (one route: sensors → agent → command → world, scored,
optionally recorded), ``evaluation`` (base vs regional vs global per region, with confidence intervals)."""
