"""Adaptation tooling: regional data (synthetic generator and real-data import into one dataset format),
training, fine-tuning, evaluation against the base model, and bundle building.

Data side, by module: ``regions`` (the region definitions and their rules), ``scene`` (scene state, labels and
the rule-based expert driver), ``render`` (camera renderer and lidar simulator), ``synthetic`` (independent
samples and temporally coherent drives) and ``dataset`` (the on-disk dataset format).
"""
