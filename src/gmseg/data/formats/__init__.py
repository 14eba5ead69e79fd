"""Reader-writers, one module per format family (Pillow for 2D files, SimpleITK for volumes).

The registry that chooses one by file ending is :data:`gmseg.data.readers.REGISTRY`; a new format is a
module here plus one line there.
"""
