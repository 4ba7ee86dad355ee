"""Adapters for torchvision, WebDataset, HuggingFace ``datasets`` and S3: the loaders' room.

Installed as ``ndf_datasets.integrations``. Each adapter is an optional extra, decodes through
the one decode path of :mod:`ndf_datasets.codec.decoding` and reads shards with
:mod:`ndf_datasets.data`; neither the codec nor ``data`` imports this package. A new loader
adapter is a module (or a package, split by role) here.
"""
