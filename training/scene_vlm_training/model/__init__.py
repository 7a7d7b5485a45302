"""The trained model: the Hugging Face Qwen2-VL wrapped with ROSS3D heads, and the frozen VAE teacher."""
