"""Times a trained model as predict.py and an exported artefact run it: `python tools/predict_timing.py --workdir=W`.

Prints seconds per image of the native scoring function at the run's eval_batch_size (predict.py's batch; decode
and preprocessing excluded), and the latency of one image through the `jax` export (symbolic batch, so a batch
of one runs as one), each the median of --repeats calls after a warm-up call.
"""

import pathlib
import statistics
import tempfile
import time

from absl import app
from absl import flags

flags.DEFINE_string("workdir", None, "A training run's workdir.", required=True)
flags.DEFINE_integer("repeats", 5, "Timed calls per figure (after one warm-up call).")
FLAGS = flags.FLAGS


def _median_seconds(function, repeats: int) -> float:
  function()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    function()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def main(argv):
  del argv
  import jax
  import numpy as np
  from mmr_jax import export
  from mmr_jax import inference

  model = inference.TrainedModel(FLAGS.workdir)
  size, batch = model.image_size, model.batch_size
  images = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
  native = _median_seconds(lambda: model.score(images), FLAGS.repeats)
  with tempfile.TemporaryDirectory() as folder:
    exported = jax.export.deserialize(export.export_jax(model, pathlib.Path(folder), platforms=("cpu",)).read_bytes())
  call = jax.jit(exported.call)
  one = _median_seconds(lambda: jax.block_until_ready(call(images[:1])), FLAGS.repeats)
  full = _median_seconds(lambda: jax.block_until_ready(call(images)), FLAGS.repeats)
  print(f"{jax.devices()[0].device_kind}, {size}² px, model of {FLAGS.workdir}")
  print(f"native, batch {batch}:   {native:.3f} s per batch, {1000 * native / batch:.1f} ms per image")
  print(f"jax export, batch {batch}: {full:.3f} s per batch, {1000 * full / batch:.1f} ms per image")
  print(f"jax export, one image: {1000 * one:.1f} ms latency")


if __name__ == "__main__":
  app.run(main)
