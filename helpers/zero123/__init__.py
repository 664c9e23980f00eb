"""Zero-1-to-3 (Liu et al., 2023): a latent diffusion model that draws an object from a new viewpoint, conditioned on
one view of it and the relative camera pose. One module per part: the schedulers, the UNet, the KL autoencoder,
the cameras and the conditioning."""
