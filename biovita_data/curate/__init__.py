"""Build stages over raw records: align, backbone, traits, split, bench, stats."""
