"""The numpy-side models a detector file holds, each served from its JSON spec: the classifier, the evidences and
their combination, the artifact CNN, the cascade's first stage, the attribution model and the latent map."""
