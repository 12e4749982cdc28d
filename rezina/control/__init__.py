"""The control plane: what rz-worker and rz-master are built from."""
