"""Pure PyTorch NV-Embed-v2 (bidirectional Mistral + latent-attention pooling). No tokenizer, no I/O.

Empty in this version: the native model arrives with the NV-Embed issue. Until then the registry entry
``nvidia/NV-Embed-v2`` says so when it is selected.
"""
