"""The synthetic motion benchmark: procedural sprite clips with exact tracks, and scores of generated videos.

Training and benchmarks use it; the runtime never imports it.
"""
