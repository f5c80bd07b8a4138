"""Small shared utilities: safe option and checkpoint IO, image IO, tiling, profiling, config checks."""
