"""Times a trained model as predict.py and an exported artefact run it: `python tools/predict_timing.py --workdir=W`.

Prints seconds per image of the native scoring function at the run's eval_batch_size (predict.py's batch; decode
and preprocessing excluded), and the latency of one image through the `jax` export (symbolic batch, so a batch
of one runs as one), each the median of --repeats calls after a warm-up call. With --adapt=DIR (normal images;
--shots=8,64 takes the first K of them): the adaptation's time for each K (its first call, compilation included,
and the median of the others) and the adapted scoring's time per image.
"""

import pathlib
import statistics
import tempfile
import time

from absl import app
from absl import flags

flags.DEFINE_string("workdir", None, "A training run's workdir.", required=True)
flags.DEFINE_integer("repeats", 5, "Timed calls per figure (after one warm-up call).")
flags.DEFINE_string("adapt", None, "Normal images (a folder or glob) to time the adaptation with.")
flags.DEFINE_list("shots", ["8", "64"], "With --adapt: how many of its images adapt, one figure each.")
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
  if FLAGS.adapt:
    from mmr_jax.data import images as image_io

    shot_files, _ = inference.list_images(FLAGS.adapt, "--adapt")
    for count in (int(k) for k in FLAGS.shots):
      if count > len(shot_files):
        print(f"--adapt has {len(shot_files)} images, fewer than {count}: skipped")
        continue
      shots = [model.preprocess(image_io.decode_rgb(f)) for f in shot_files[:count]]
      start = time.perf_counter()
      adapted = model.adapt(shots, preprocessed=True)
      first = time.perf_counter() - start
      again = _median_seconds(
        lambda: jax.block_until_ready(model.adapt(shots, preprocessed=True).adaptation), FLAGS.repeats
      )
      scored = _median_seconds(lambda: adapted.score(images), FLAGS.repeats)
      print(
        f"adaptation to {count} shots: {first:.2f} s first (compiling), {again:.3f} s then; adapted scoring, batch "
        f"{batch}: {scored:.3f} s per batch, {1000 * scored / batch:.1f} ms per image (unadapted "
        f"{1000 * native / batch:.1f})"
      )


if __name__ == "__main__":
  app.run(main)
