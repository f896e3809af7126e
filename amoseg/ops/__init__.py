"""Network-side building blocks shared by the recipes, training and inference: inferers
(slices, sliding windows), test-time mirroring, losses and on-device augmentation. They know
tensors and predictors, not run folders, stores or files."""
