"""``camdet doctor``: what a check is (checks), the local and server checks, and their run."""
