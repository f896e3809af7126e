"""Pictures and pages from arrays: matplotlib figures (overlays, confusion matrices, curves)
and the self-contained HTML viewer. Used by prediction, reports and tuning alike."""
