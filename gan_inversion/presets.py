"""Named generator/discriminator architectures for `resynth train --preset` (and the benchmark generators)."""

PRESETS = {
    # The embedded default: 32x32 grayscale Fashion-MNIST; see models/MODEL_CARD.md.
    "fmnist32": {
        "G": dict(z_dim=128, w_dim=128, img_resolution=32, img_channels=1, mapping_layers=8, channel_base=2048,
                  channel_max=64),
        "D": dict(img_resolution=32, img_channels=1, channel_base=2048, channel_max=64),
    },
    # A second, narrower StyleGAN2 the detector never sees (benchmarks/generators.py).
    "fmnist32-narrow": {
        "G": dict(z_dim=128, w_dim=128, img_resolution=32, img_channels=1, mapping_layers=8, channel_base=1024,
                  channel_max=32),
        "D": dict(img_resolution=32, img_channels=1, channel_base=1024, channel_max=32),
    },
}
