"""What several systems of the course share.

- ``optim``: AdamW with decay on matrices only, the warm-up + cosine schedule, bfloat16 autocast on a GPU.
- ``loop``: the training-loop convention (a step function, :func:`optimiser_step`, a :class:`History` record,
  one meaning of ``progress``) that LLaMA pretraining, MAE and SAM all run through. Start here.
- ``render``: pybullet's CPU renderer, objects, posed cameras and lights (SAM's scenes; posed views of objects).
- ``stats``: the paired gap between two methods on the same items and its standard error, over items or groups
  (Labs 3, 4 and 5).
"""
