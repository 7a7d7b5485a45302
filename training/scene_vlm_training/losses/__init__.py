"""Training losses, one module each: answer-token text loss, the DiT denoiser and its conditioning,
and ROSS3D's cross-view (masked frames) and global-view (BEV) reconstruction objectives."""
