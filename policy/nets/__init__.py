"""Networks: the DP transformer denoiser and the image encoder."""
