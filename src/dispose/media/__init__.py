"""Reading and writing images and videos, and the preprocessing geometry shared by all inputs."""
