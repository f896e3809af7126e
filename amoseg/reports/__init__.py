"""Turning trained runs into numbers and pictures: evaluate one run, compare many, run the demo."""
