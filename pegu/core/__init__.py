"""The ground floor (layer 1 of 6): settings, the registry of models, device and dtype,
images, errors, and the geometry of sizes and tiles. Imports nothing else of pegu."""
