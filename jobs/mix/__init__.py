"""``aigc augment``: curated real rows and published synthetic rows mixed into one training dataset."""
