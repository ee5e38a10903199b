"""The offline stage: segment each source image, inpaint the hole, write the cache."""
