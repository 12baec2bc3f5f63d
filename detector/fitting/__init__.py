"""Everything that fits: the classifier, the evidences, the artifact CNN, the cascade, attribution, the latent map,
calibration on the user's photos, and the held-out evaluation. Fitting writes detector files; serving
(detector/runtime/) only reads them and never imports this package."""
