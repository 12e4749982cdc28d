"""The wire: codec, endpoints, the edge protocol and its transports."""
