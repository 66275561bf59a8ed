"""Offline scripts: tokenizer, full fine-tuning, LoRA, evaluation report, the mini preset."""
