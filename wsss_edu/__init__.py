"""wsss_edu: the helper package of a notebook course on weakly-supervised semantic segmentation."""
__version__ = "0.1.0"
