"""gradserve's benchmark suite: every cost measured against a baseline of this machine (`python -m bench`)."""
