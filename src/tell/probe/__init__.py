"""Looking inside: hidden-state probes of the anchor's separation, and anchors written by the model itself."""
