"""Adapters for torchvision, WebDataset, HuggingFace ``datasets`` and S3.

Installed as ``ndf_datasets.integrations``. Each adapter is an optional extra and goes through
the one decode path of :mod:`ndf_datasets.decode`; the codec core never imports this package.
"""
