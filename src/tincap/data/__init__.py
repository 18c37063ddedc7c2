"""Datamodules behind one contract (`datamodule.ImageDataModule`): classification datasets, captions, the generated
shapes; the HDF5 decode-once cache, batch transforms, samplers and the vocabulary."""
