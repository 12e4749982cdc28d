"""The stage runtimes: hydrant, notch (and its worker pool) and bocca."""
