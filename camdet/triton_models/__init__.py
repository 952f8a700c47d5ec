"""Python-backend model implementations; model.py files in the repositories are shims."""
