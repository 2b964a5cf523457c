"""mathtune: LoRA fine-tuning and an honest GSM8K benchmark from one config file."""

__version__ = "0.1.0"
