"""Building blocks of a self-supervised step, for any training loop: the EMA teacher (``ema``), SwAV's
queue of past embeddings (``queue``), DeepCluster-v2's memory bank (``memory``) and the multi-crop forward
through backbone and projector (``crops``)."""
