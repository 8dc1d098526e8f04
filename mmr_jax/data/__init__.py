"""Datasets for MMR: folder layouts, TFDS builders, tf.data pipelines, the generated dataset and its checks.

  layouts.py     which files form which split of each published layout (no decoding)
  decoding.py    every file of a split decoded up front, bad ones named
  sources.py     the splits a run reads, memoised, and the held-out calibration images
  images.py      PIL decoding;  preprocess.py: the published transforms, computed with PIL
  pipeline.py    tf.data training and evaluation batches (imports TensorFlow when a pipeline is first built)
  tfds_builders/ TFDS builders over the manual downloads
  synthetic/     the generated AeBAD-like dataset (scene, defects, shading, blades, disk; the writer in
                 __init__.py);  check.py: `python -m mmr_jax check_data`

Nothing is imported here, so that importing one module loads neither TensorFlow nor the generator.
"""
