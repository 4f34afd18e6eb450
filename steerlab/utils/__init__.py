"""Small shared utilities (progress bars, atomic files, hashing)."""
