"""Numbered SQL migrations, shipped inside the wheel so `tornstore init` works after `pip install .`."""
