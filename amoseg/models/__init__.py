"""Model families behind one interface (fit / predict / save / load), registered by name."""
