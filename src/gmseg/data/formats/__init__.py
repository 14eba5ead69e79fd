"""Reader-writers, one module per format family (Pillow for 2D files, SimpleITK for volumes and for DICOM
series, a folder of slices read as one volume by :func:`gmseg.data.readers.read_volume`).

The registry that chooses one by file ending is :data:`gmseg.data.readers.REGISTRY`; a new format is a
module here plus one line there.
"""
