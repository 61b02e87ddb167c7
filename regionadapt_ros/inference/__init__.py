"""Inference backends behind one interface, and the double-buffered slots that swap weights atomically."""
