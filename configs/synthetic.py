"""The embedded default: MMR on the procedurally generated AeBAD-like dataset, small enough for a 2-core CPU.

    python train.py --config=configs/synthetic.py --workdir=runs/synthetic
    python evaluate.py --config=configs/synthetic.py --workdir=runs/synthetic

The dataset is generated under data.root on first use (`python -m mmr_jax.data.synthetic`). The run uses the
published code path (masking, FPN, loss, schedule shape, evaluation) with a small student and teacher at small
images, both randomly initialised since no pretrained weights ship with the project.
"""

from configs import common


def get_config():
  c = common.get_config()
  c.data.name = "aebad_s"
  c.data.root = "data/synthetic"
  c.data.synthetic = True
  c.data.image_size = 128
  c.data.resize_size = 146  # Keeps the published 256/224 resize-to-crop ratio.
  c.model.vit = common.vit_config("micro")
  c.model.teacher = "resnet_micro"
  c.init.student = ""
  c.init.teacher = ""
  c.num_epochs = 30
  # The published schedule's shape (warm-up, then ÷10 at 60% and 80% of training), shortened.
  c.optim.warmup_epochs = 3
  c.optim.decay_epochs = (18, 24)
  c.batch_size = 16
  return c
