"""LightningDataModules (one per dataset family), the HDF5 decode-once cache and batch transforms."""
