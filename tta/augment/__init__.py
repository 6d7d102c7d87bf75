"""Test-time augmentations used by the teacher/consistency methods, batched over views."""
