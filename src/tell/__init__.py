"""tell: Token-Efficient Leverage Learning (TELL, arXiv 2404.00914) for low-resource fine-tuning."""

__version__ = "0.1.0"
