"""olsdesk: train medical-image classifiers with Online Label Smoothing and watch what it does."""

__version__ = "0.3.0"
