"""The prepared store: `prepare` (dataset → store), splits and folds, the store's layout and
identity, and the samplers that read training slices and patches from it."""
